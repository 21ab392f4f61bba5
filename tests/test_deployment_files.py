"""docker-compose.yml and the Procfile: the services the docs list, and a Flower nobody reaches without a password."""

import shlex

import yaml

from scripts.processes import ROOT


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name: shlex.split(command) for name, _, command in (line.partition(":") for line in lines if line.strip())}


def test_compose_runs_the_services_readme_lists():
    assert set(compose()["services"]) == {
        "postgres",
        "redis",
        "migrate",
        "web",
        "worker",
        "control",
        "webhooks",
        "beat",
        "flower",
    }


def test_compose_refuses_to_start_flower_without_a_password():
    flower = compose()["services"]["flower"]
    # ${NAME:?message} makes `docker compose` stop with the message when NAME is unset or empty.
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert flower["environment"]["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")


def test_make_run_binds_flower_and_the_web_to_this_machine_only():
    processes = procfile()
    assert "--address=127.0.0.1" in processes["flower"]
    assert processes["web"][processes["web"].index("--host") + 1] == "127.0.0.1"
