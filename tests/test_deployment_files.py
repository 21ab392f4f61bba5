"""docker-compose.yml, the Dockerfile and the Procfile: the services, their health checks, a Flower with a password."""

import os
import shlex

import yaml

from scripts import check_compose
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


def test_compose_follows_the_compose_specification_and_a_typo_is_caught(tmp_path):
    assert check_compose.problems(ROOT / "docker-compose.yml") == []
    broken = compose()
    broken["services"]["web"]["helthcheck"] = broken["services"]["web"].pop("healthcheck")
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    assert any("helthcheck" in line for line in check_compose.problems(path))


def test_the_image_checks_liveness_on_a_current_python_without_graphviz():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("FROM python:3.13-slim")
    assert "graphviz" not in dockerfile
    healthcheck = dockerfile.split("\nHEALTHCHECK ", 1)[1].split("\nCMD ", 1)[0]
    assert "/health/live/" in healthcheck


def test_compose_checks_the_web_for_readiness_and_each_worker_by_pinging_its_own_node():
    services = compose()["services"]
    assert "/health/ready/" in " ".join(services["web"]["healthcheck"]["test"])
    for name, node in (("worker", "subtasks"), ("control", "control"), ("webhooks", "webhooks")):
        test = " ".join(services[name]["healthcheck"]["test"])
        assert f"celery -A config inspect ping -d {node}@$$HOSTNAME" in test, name
        assert f"{node}@%h" in services[name]["command"], name
    # Throttling counts, the workers' last ping and the metrics' figures are shared by the web processes.
    assert services["web"]["environment"]["CACHE_URL"].startswith("redis://redis:6379/")


def test_make_run_the_image_and_compose_start_the_web_through_one_script():
    assert procfile()["web"][0] == "scripts/web.sh"
    assert compose()["services"]["web"]["command"][0] == "scripts/web.sh"
    assert '\nCMD ["scripts/web.sh", ' in (ROOT / "Dockerfile").read_text()
    assert os.access(ROOT / "scripts" / "web.sh", os.X_OK)
