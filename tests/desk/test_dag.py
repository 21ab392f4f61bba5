"""The DAG picture: layered columns, coloured statuses, escaped labels, and a summary for huge plans."""

import re
import xml.etree.ElementTree as ET

import pytest

from desk.dag import MAX_EDGES, MAX_NODES, STATUS_COLOURS, Node, dag_svg, summary_svg, text_colour, too_large

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def node_boxes(root: ET.Element) -> dict[str, tuple[float, float, str]]:
    """Return each node's key -> (x, y, fill)."""
    boxes = {}
    for group in root.iter(f"{SVG}g"):
        if group.get("class") == "node":
            rect = group.find(f"{SVG}rect")
            assert rect is not None
            boxes[str(group.get("data-key"))] = (
                float(rect.get("x", "")),
                float(rect.get("y", "")),
                str(rect.get("fill")),
            )
    return boxes


def diamond() -> tuple[list[Node], list[tuple[str, str]]]:
    nodes = [
        Node("a", "done", 0, 0, label="coder"),
        Node("b", "running", 1, 1, label="coder"),
        Node("c", "waiting_approval", 1, 2, label="debug"),
        Node("d", "pending", 2, 3, label="ask"),
    ]
    return nodes, [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]


def test_each_batch_is_a_column_and_dependencies_point_right():
    nodes, edges = diamond()
    root = parse(dag_svg(nodes, edges))
    boxes = node_boxes(root)
    assert boxes["a"][0] < boxes["b"][0] == boxes["c"][0] < boxes["d"][0]
    assert boxes["b"][1] < boxes["c"][1]
    paths = [path for path in root.iter(f"{SVG}path") if path.get("data-edge")]
    assert sorted(path.get("data-edge") for path in paths) == ["a>b", "a>c", "b>d", "c>d"]
    for path in paths:
        src, dst = path.get("data-edge").split(">")
        start_x = float(re.match(r"M ([\d.]+)", path.get("d")).group(1))
        assert boxes[src][0] < start_x < boxes[dst][0]


def test_nodes_are_coloured_by_status_with_a_legend():
    nodes, edges = diamond()
    svg = dag_svg(nodes, edges)
    boxes = node_boxes(parse(svg))
    assert {key: fill for key, (_, _, fill) in boxes.items()} == {
        "a": STATUS_COLOURS["done"],
        "b": STATUS_COLOURS["running"],
        "c": STATUS_COLOURS["waiting_approval"],
        "d": STATUS_COLOURS["pending"],
    }
    assert "waiting approval 1" in svg
    assert "done 1" in svg


def test_labels_are_escaped():
    nodes = [Node("x", "failed", 0, label='<script>alert("x")</script>', href="/admin/?a=1&b=2")]
    svg = dag_svg(nodes, [])
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    root = parse(svg)
    link = root.find(f"{SVG}g[@class='nodes']/{SVG}a")
    assert link is not None
    assert link.get("href") == "/admin/?a=1&b=2"


def test_long_keys_are_clipped_but_kept_whole_in_the_tooltip():
    key = "k" * 60
    root = parse(dag_svg([Node(key, "done", 0)], []))
    texts = [text.text for text in root.iter(f"{SVG}text")]
    assert any(text and text.endswith("…") and len(text) < 30 for text in texts)
    assert any(key in (title.text or "") for title in root.iter(f"{SVG}title"))


def test_edges_to_unknown_keys_and_self_loops_are_ignored():
    root = parse(dag_svg([Node("a", "done", 0), Node("b", "done", 1)], [("a", "b"), ("a", "zzz"), ("b", "b")]))
    assert [path.get("data-edge") for path in root.iter(f"{SVG}path") if path.get("data-edge")] == ["a>b"]


def test_nodes_follow_their_dependencies_to_avoid_crossings():
    # Two chains submitted in crossed order: the second column is reordered to match the first.
    nodes = [
        Node("top", "done", 0, 0),
        Node("bottom", "done", 0, 1),
        Node("after_bottom", "done", 1, 2),
        Node("after_top", "done", 1, 3),
    ]
    boxes = node_boxes(parse(dag_svg(nodes, [("top", "after_top"), ("bottom", "after_bottom")])))
    assert boxes["after_top"][1] < boxes["after_bottom"][1]


def test_a_few_hundred_nodes_are_drawn():
    nodes = [Node(f"n{i}", "pending", i // 20, i) for i in range(MAX_NODES)]
    edges = [(f"n{i - 20}", f"n{i}") for i in range(20, MAX_NODES)]
    root = parse(dag_svg(nodes, edges))
    assert len(node_boxes(root)) == MAX_NODES
    assert not too_large(nodes=MAX_NODES, edges=MAX_EDGES)
    assert too_large(nodes=MAX_NODES + 1, edges=0)
    assert too_large(nodes=10, edges=MAX_EDGES + 1)


def test_an_empty_graph_is_still_a_picture():
    assert parse(dag_svg([], [])).tag == f"{SVG}svg"


def test_the_summary_splits_one_bar_by_status():
    svg = summary_svg({"done": 7000, "failed": 1000, "pending": 2000}, batches=57)
    root = parse(svg)
    widths = {
        rect.find(f"{SVG}title").text.split(":")[0]: float(rect.get("width"))
        for rect in root.iter(f"{SVG}rect")
        if rect.find(f"{SVG}title") is not None
    }
    assert widths["done"] == pytest.approx(7 * widths["failed"])
    assert "10000 subtasks in 57 batches" in svg


def test_text_is_dark_on_light_colours_and_light_on_dark_ones():
    assert text_colour("#ffffff") == "#111827"
    assert text_colour("#111111") == "#ffffff"
