"""ComfyUI backend against real recorded ComfyUI 0.3.64 responses (../shared/testdata/comfyui-captures).

A stand-in server on 127.0.0.1 answers each request with a captured status, headers and body; expected values come
from the captures themselves (the recorded requests and answers), never from lorakit's output.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lorakit.bench import comfyui
from lorakit.errors import LorakitError

CAPTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "comfyui-captures"
pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="ComfyUI captures not present")


def capture(name: str) -> dict:
    return json.loads((CAPTURES / name).read_text(encoding="utf-8"))


# ---- workflow patching on the real files ----

def test_patch_sets_exact_nodes_and_nothing_else() -> None:
    original = comfyui.load_workflow(CAPTURES / "workflow_api_lora.json")
    patched = comfyui.patch_workflow(original, lora_name="mine_1.safetensors", strength_model=0.6, strength_clip=0.4,
                                     seed=7, positive="a cat", negative="ugly", batch_size=3, filename_prefix="b/w06")
    expected = copy.deepcopy(original)  # node ids read from the file: 2 LoraLoader, 6 KSampler, 3/4 text, 5, 8
    expected["2"]["inputs"].update(lora_name="mine_1.safetensors", strength_model=0.6, strength_clip=0.4)
    expected["6"]["inputs"]["seed"] = 7
    expected["3"]["inputs"]["text"], expected["4"]["inputs"]["text"] = "a cat", "ugly"
    expected["5"]["inputs"]["batch_size"] = 3
    expected["8"]["inputs"]["filename_prefix"] = "b/w06"
    assert patched == expected
    assert original == capture("workflow_api_lora.json")  # the input is not modified


@pytest.mark.parametrize("run, kwargs", [
    ("run_lora_s0_prompt.json", dict(strength_model=0.0, strength_clip=0.0, filename_prefix="lora_s0")),
    ("run_lora_s1_prompt.json", dict(strength_model=1.0, strength_clip=1.0, filename_prefix="lora_s1")),
    ("run_lora_bad_s1_prompt.json", dict(lora_name="sd15mini_kohya_bad.safetensors", filename_prefix="lora_bad")),
])
def test_patch_reproduces_recorded_runs(run: str, kwargs: dict) -> None:
    workflow = comfyui.load_workflow(CAPTURES / "workflow_api_lora.json")
    assert comfyui.patch_workflow(workflow, **kwargs) == capture(run)["request"]["prompt"]


def test_follow_links_to_text_nodes_and_advanced_sampler() -> None:
    workflow = comfyui.load_workflow(CAPTURES / "workflow_api_lora.json")
    workflow["6"]["inputs"]["positive"], workflow["6"]["inputs"]["negative"] = ["4", 0], ["3", 0]  # swapped links
    workflow["6"]["class_type"] = "KSamplerAdvanced"
    workflow["6"]["inputs"]["noise_seed"] = workflow["6"]["inputs"].pop("seed")
    patched = comfyui.patch_workflow(workflow, positive="P", negative="N", seed=5)
    assert patched["4"]["inputs"]["text"] == "P" and patched["3"]["inputs"]["text"] == "N"
    assert patched["6"]["inputs"]["noise_seed"] == 5 and "seed" not in patched["6"]["inputs"]


def test_lora_model_only_has_no_clip_strength() -> None:
    workflow = comfyui.load_workflow(CAPTURES / "workflow_api_lora.json")
    workflow["2"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "x",
                                                                     "strength_model": 1.0}}
    patched = comfyui.patch_workflow(workflow, strength_model=0.5, strength_clip=0.5)
    assert patched["2"]["inputs"] == {"model": ["1", 0], "lora_name": "x", "strength_model": 0.5}


def test_patch_errors_name_the_nodes() -> None:
    nolora = comfyui.load_workflow(CAPTURES / "workflow_api_nolora.json")
    with pytest.raises(LorakitError, match="no LoRA loader node"):
        comfyui.patch_workflow(nolora, strength_model=1.0)
    assert comfyui.patch_workflow(nolora, seed=1)  # no LoRA asked for: fine
    two = comfyui.load_workflow(CAPTURES / "workflow_api_lora.json")
    two["9"] = copy.deepcopy(two["6"])
    with pytest.raises(LorakitError, match=r"2 sampler nodes \(6 \(KSampler\), 9 \(KSampler\)\)"):
        comfyui.patch_workflow(two, seed=1)
    del two["9"], two["6"]
    with pytest.raises(LorakitError, match="no sampler node"):
        comfyui.patch_workflow(two, seed=1)


def test_ui_format_is_refused_with_export_hint() -> None:
    with pytest.raises(LorakitError, match="UI format") as err:
        comfyui.load_workflow(CAPTURES / "workflow_ui_format.json")
    assert "Export Workflow (API)" in str(err.value) and "Save (API Format)" in str(err.value)
    for name in ("err_ui_workflow_wrapped.json", "err_ui_workflow_wrapped_old_no_id.json"):
        with pytest.raises(LorakitError, match="UI format"):
            comfyui.check_api_format(capture(name)["request"]["json"])


# ---- stand-in ComfyUI server ----

class StandIn(BaseHTTPRequestHandler):
    routes: dict[tuple[str, str], tuple[int, dict, bytes]] = {}
    received: list[tuple[str, str, bytes]] = []

    def _answer(self, method: str) -> None:
        body_in = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append((method, self.path, body_in))
        status, headers, body = self.routes[(method, self.path)]
        self.send_response(status)
        for key, value in headers.items():
            if key != "Content-Length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def log_message(self, *args) -> None:
        pass


def _encoded(body) -> bytes:
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()


def route(method: str, path: str, status: int, headers: dict, body) -> None:
    StandIn.routes[(method, path)] = (status, headers, body if isinstance(body, bytes) else _encoded(body))


def route_capture(name: str, body=None) -> None:
    cap = capture(name)
    route(cap["request"]["method"], cap["request"]["path"], cap["status"], cap["headers"],
          cap["body"] if body is None else body)


@pytest.fixture()
def server():
    StandIn.routes, StandIn.received = {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_submit_success(server: str) -> None:
    run = capture("run_lora_s1_prompt.json")
    route("POST", "/prompt", run["status"], {"Content-Type": "application/json"}, run["response"])
    prompt_id = comfyui.submit(server, run["request"]["prompt"], run["request"]["client_id"])
    assert prompt_id == run["response"]["prompt_id"]
    assert json.loads(StandIn.received[-1][2]) == run["request"]


ERRORS = sorted(p.name for p in CAPTURES.glob("err_*.json")) if CAPTURES.is_dir() else []


@pytest.mark.parametrize("name", ERRORS)
def test_submit_reports_every_recorded_error(server: str, name: str) -> None:
    cap = capture(name)
    route("POST", "/prompt", cap["status"], cap["headers"], cap["body"])
    sent = cap["request"].get("json", {}).get("prompt", {})
    with pytest.raises(LorakitError) as err:
        comfyui.submit(server, sent, "c1")
    text = str(err.value)
    if isinstance(cap["body"], str):
        assert f"HTTP {cap['status']}" in text and "Server got itself in trouble" in text
        return
    assert cap["body"]["error"]["message"] in text
    for node_id, node in cap["body"]["node_errors"].items():  # each node id, class_type and input is named
        for e in node["errors"]:
            assert f"node {node_id} ({node['class_type']}) input '{e['extra_info']['input_name']}'" in text


def test_error_messages_read_well(server: str) -> None:
    for name, wanted in [
        ("err_lora_value_not_in_list.json", "node 2 (LoraLoader) input 'lora_name': Value not in list: lora_name: "
                                            "'does_not_exist.safetensors' not in"),
        ("err_unknown_class_type.json", "node KSamplerDoesNotExist does not exist. (node 6, KSamplerDoesNotExist)"),
        ("err_missing_class_type.json", "missing the class_type property. (node 6, no class_type)"),
        ("err_ui_workflow_bare.json", "Export Workflow (API)"),
        ("err_ui_workflow_wrapped.json", "(node id, not a node)"),
        ("err_ui_workflow_wrapped.json", "Export Workflow (API)"),
        ("err_no_outputs.json", "add an output node such as SaveImage"),
    ]:
        route_capture(name)
        with pytest.raises(LorakitError) as err:
            comfyui.submit(server, capture(name)["request"]["json"].get("prompt", {}), "c1")
        assert wanted in str(err.value), (name, str(err.value))


def test_history_images_and_view(server: str) -> None:
    route_capture("get_history_success.json")
    png = (CAPTURES / "ws_success_lora.png").read_bytes()
    route_capture("get_view_success_headers_only.json", body=png)
    prompt_id = "1f7f0526-30e4-4bb8-9f13-c39ab8bfa419"
    images = comfyui.output_images(comfyui.history(server, prompt_id))
    assert images == [{"filename": "capture_00001_.png", "subfolder": "", "type": "output"}]
    assert comfyui.view(server, images[0]) == png
    assert StandIn.received[-1][1] == capture("get_view_success_headers_only.json")["request"]["path"]


def test_history_error_unknown_and_view_errors(server: str) -> None:
    route_capture("get_history_execution_error.json")
    entry = comfyui.history(server, "6b86910b-e1fa-4aa0-9730-26b070b32b68")
    with pytest.raises(LorakitError, match=r"node 1 \(CheckpointLoaderSimple\): RuntimeError: ERROR: Could not detect"):
        comfyui.output_images(entry)
    route_capture("get_history_unknown_id.json")
    assert comfyui.history(server, "00000000-0000-0000-0000-000000000000") is None
    route_capture("get_view_missing_file.json")
    with pytest.raises(LorakitError, match=r"no image 'nope.png' in output/ \(HTTP 404\)"):
        comfyui.view(server, {"filename": "nope.png", "subfolder": "", "type": "output"})
    route("GET", "/view?filename=..%2Fmain.py&subfolder=&type=output", 400, {}, b"")  # capture: 400, empty body
    with pytest.raises(LorakitError, match="HTTP 400"):
        comfyui.view(server, {"filename": "../main.py", "type": "output"})


def test_queue_and_system_stats(server: str) -> None:
    route_capture("get_queue.json")
    route_capture("get_system_stats.json")
    assert comfyui.queue(server) == {"queue_running": [], "queue_pending": []}
    assert comfyui.system_stats(server)["system"]["comfyui_version"] == "0.3.64"


def test_unreachable_names_the_url() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has nothing listening now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(LorakitError, match=f"ComfyUI is not reachable at {url}: start it, or check --comfy-url"):
        comfyui.submit(url, {}, "c1")


# ---- websocket sequences ----

def _prompt_id(cap: dict) -> str:
    return next(m["data"]["data"]["prompt_id"] for m in cap["messages"]
                if m["kind"] == "text" and "prompt_id" in m["data"]["data"])


@pytest.mark.parametrize("name, state, cached, executed, previews", [
    ("ws_success_lora.json", "done", ["1", "5"], ["2", "4", "3", "6", "7", "8"], 0),
    ("ws_success_partly_cached.json", "done", ["1", "3", "4", "5", "2"], ["6", "7", "8"], 0),
    ("ws_success_fully_cached.json", "cached", ["1", "3", "4", "5", "6", "7", "8", "2"], [], 0),
    ("ws_success_with_previews_latent2rgb.json", "done", ["1", "3", "4", "5", "2"], ["6", "7", "8"], 3),
])
def test_follow_recorded_successes(name: str, state: str, cached: list, executed: list, previews: int) -> None:
    cap = capture(name)
    run = comfyui.follow_messages(cap["messages"], _prompt_id(cap))
    assert (run.state, run.cached_nodes, run.executed_nodes, run.previews) == (state, cached, executed, previews)
    executed_msg = next(m["data"]["data"] for m in cap["messages"] if m["kind"] == "text"
                        and m["data"]["type"] == "executed")
    assert run.images == executed_msg["output"]["images"]


def test_follow_recorded_execution_error() -> None:
    cap = capture("ws_execution_error_ckpt.json")
    run = comfyui.follow_messages(cap["messages"], _prompt_id(cap))
    assert (run.state, run.error_node, run.error_class) == ("error", "1", "CheckpointLoaderSimple")
    assert "Could not detect model type of: ComfyUI/models/checkpoints/tiny_ch32.safetensors" in run.error_message


def test_follow_recorded_validation_error(server: str) -> None:
    cap = capture("ws_validation_error.json")  # refused at /prompt: the socket only ever sees a status message
    assert comfyui.follow_messages(cap["messages"], "any").state == "waiting"
    route("POST", "/prompt", cap["prompt_response"]["status"], {}, cap["prompt_response"]["body"])
    with pytest.raises(LorakitError, match="node 2 \\(LoraLoader\\) input 'lora_name'"):
        comfyui.submit(server, cap["prompt_request"]["prompt"], cap["client_id"])
