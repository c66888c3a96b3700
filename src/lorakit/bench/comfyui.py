"""ComfyUI backend: patch an API-format workflow, submit it, read the results.

HTTP with the standard library (urllib, json), the websocket with websocket-client. Shapes follow a real ComfyUI
0.3.64 server: `POST /prompt` answers `{"prompt_id", "number", "node_errors"}` or HTTP 400 with `{"error": {type,
message, details}, "node_errors": {id: {"errors": [...], "class_type"}}}`; `/history/<id>` maps the id to `{prompt,
outputs, status, meta}`; the `/ws` websocket sends `{"type", "data"}` text messages and binary preview frames.
`RunState.update` reads one message, so a live `Connection` and a recorded sequence (`follow_messages`) share code.
"""

from __future__ import annotations

import copy
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lorakit.errors import LorakitError

Workflow = dict[str, dict[str, Any]]

API_FORMAT_HINT = ("export the API format: in ComfyUI use File → Export Workflow (API) (older menus: enable Dev mode "
                   "in the settings, then Save (API Format)), and pass that file to --workflow")
SAMPLERS = {"KSampler": "seed", "KSamplerAdvanced": "noise_seed"}
LORA_LOADERS = ("LoraLoader", "LoraLoaderModelOnly")


# ---- workflow: load, check, patch (pure) ----

def load_workflow(path: str | Path) -> Workflow:
    """Read an API-format workflow file; refuse the UI format with how to export the right one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LorakitError(f"cannot read the ComfyUI workflow {path}: {exc}") from exc
    return check_api_format(data, str(path))


def check_api_format(data: Any, source: str = "workflow") -> Workflow:
    """Return the API-format graph (also accepts a `{"prompt": graph}` request body); raise on anything else."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]
    if isinstance(data, dict) and isinstance(data.get("nodes"), list) and isinstance(data.get("links"), list):
        raise LorakitError(f"{source} is a ComfyUI workflow in the UI format (it has 'nodes' and 'links' lists), "
                           "which ComfyUI's /prompt refuses", hint=API_FORMAT_HINT)
    if not isinstance(data, dict) or not data:
        raise LorakitError(f"{source} is not an API-format ComfyUI workflow (expected an object of nodes by id)",
                           hint=API_FORMAT_HINT)
    for node_id, node in data.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs"), dict):
            raise LorakitError(f"{source}: node {node_id} has no 'class_type' and 'inputs'", hint=API_FORMAT_HINT)
    return data


def find_nodes(workflow: Workflow, *class_types: str) -> list[str]:
    """Ids of the nodes whose class_type is one of `class_types`, in file order."""
    return [node_id for node_id, node in workflow.items() if node["class_type"] in class_types]


def _single(workflow: Workflow, class_types: tuple[str, ...], what: str) -> str:
    ids = find_nodes(workflow, *class_types)
    if not ids:
        raise LorakitError(f"the workflow has no {what} node ({' or '.join(class_types)})",
                           hint="add one to the workflow in ComfyUI and export it again")
    if len(ids) > 1:
        found = ", ".join(f"{i} ({workflow[i]['class_type']})" for i in ids)
        raise LorakitError(f"the workflow has {len(ids)} {what} nodes ({found}); lorakit patches exactly one",
                           hint="keep one in the bench workflow")
    return ids[0]


def text_node(workflow: Workflow, sampler_id: str, side: str) -> str:
    """Follow the sampler's positive/negative link to the CLIPTextEncode that feeds it."""
    link = workflow[sampler_id]["inputs"].get(side)
    if not (isinstance(link, list) and len(link) == 2):
        raise LorakitError(f"sampler node {sampler_id} has no '{side}' link")
    target = str(link[0])
    if target not in workflow:
        raise LorakitError(f"sampler node {sampler_id} '{side}' links to node {target}, which is not in the workflow")
    if workflow[target]["class_type"] != "CLIPTextEncode":
        raise LorakitError(f"sampler node {sampler_id} '{side}' comes from node {target} "
                           f"({workflow[target]['class_type']}), not a CLIPTextEncode; lorakit cannot set its text",
                           hint=f"connect a CLIPTextEncode directly to the sampler's {side} input")
    return target


def patch_workflow(workflow: Workflow, *, lora_name: str | None = None, strength_model: float | None = None,
                   strength_clip: float | None = None, seed: int | None = None, positive: str | None = None,
                   negative: str | None = None, batch_size: int | None = None, filename_prefix: str | None = None,
                   steps: int | None = None, cfg: float | None = None, sampler_name: str | None = None,
                   scheduler: str | None = None, width: int | None = None, height: int | None = None) -> Workflow:
    """A patched copy: only the values given are set, everything else is left as it was."""
    out = copy.deepcopy(workflow)
    if lora_name is not None or strength_model is not None or strength_clip is not None:
        lora = out[_single(out, LORA_LOADERS, "LoRA loader")]["inputs"]
        if lora_name is not None:
            lora["lora_name"] = lora_name
        if strength_model is not None:
            lora["strength_model"] = strength_model
        if strength_clip is not None and "strength_clip" in lora:  # LoraLoaderModelOnly has no CLIP strength
            lora["strength_clip"] = strength_clip
    sampling = {"steps": steps, "cfg": cfg, "sampler_name": sampler_name, "scheduler": scheduler}
    if seed is not None or positive is not None or negative is not None or any(sampling.values()):
        sampler_id = _single(out, tuple(SAMPLERS), "sampler")
        if seed is not None:
            out[sampler_id]["inputs"][SAMPLERS[out[sampler_id]["class_type"]]] = seed
        out[sampler_id]["inputs"].update({k: v for k, v in sampling.items() if v is not None})
        for side, text in (("positive", positive), ("negative", negative)):
            if text is not None:
                out[text_node(out, sampler_id, side)]["inputs"]["text"] = text
    latent = {"batch_size": batch_size, "width": width, "height": height}
    if any(v is not None for v in latent.values()):
        out[_single(out, ("EmptyLatentImage",), "empty latent")]["inputs"].update(
            {k: v for k, v in latent.items() if v is not None})
    if filename_prefix is not None:
        out[_single(out, ("SaveImage",), "SaveImage")]["inputs"]["filename_prefix"] = filename_prefix
    return out


# ---- HTTP client ----

def _request(url: str, path: str, payload: Any = None, timeout: float = 30.0) -> tuple[int, bytes]:
    """(status, body) for any HTTP answer; a clear LorakitError when nothing answers."""
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    req = urllib.request.Request(url.rstrip("/") + path, data=data,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # 4xx/5xx still carry ComfyUI's explanation in the body
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise LorakitError(f"ComfyUI is not reachable at {url}: start it, or check --comfy-url ({exc})") from exc


def _json(url: str, path: str) -> Any:
    status, body = _request(url, path)
    if status != 200:
        raise LorakitError(f"ComfyUI answered HTTP {status} to GET {path}: {body[:200]!r}")
    return json.loads(body)


def describe_prompt_error(body: dict, workflow: Workflow | None = None) -> str:
    """One readable message from a /prompt error body: the error, then one line per node and input."""
    error = body.get("error") or {}
    lines = [error.get("message", "ComfyUI refused the prompt") if isinstance(error, dict) else str(error)]
    details = error.get("details", "") if isinstance(error, dict) else ""
    node_ref = re.search(r"Node ID '#(.+)'", details)
    node = (workflow or {}).get(node_ref.group(1)) if node_ref else None
    if node_ref and node is not None:
        class_type = node.get("class_type", "no class_type") if isinstance(node, dict) else "not a node"
        lines[0] += f" (node {node_ref.group(1)}, {class_type})"
    elif details:
        lines[0] += f" ({details})"
    for node_id, node in (body.get("node_errors") or {}).items():
        for err in node.get("errors", []):
            extra = err.get("extra_info") or {}
            what = f"node {node_id} ({node.get('class_type', '?')}) input '{extra.get('input_name', '?')}'"
            line = f"  {what}: {err.get('message', '')}"
            if err.get("details"):
                line += f": {err['details']}"
            lines.append(line)
    return "\n".join(lines)


_HINTS = {"no_prompt": API_FORMAT_HINT, "prompt_no_outputs": "add an output node such as SaveImage",
          "value_not_in_list": "put the file in ComfyUI's models folder (loras/, checkpoints/) or fix the name"}


def submit(url: str, workflow: Workflow, client_id: str) -> str:
    """POST /prompt; the prompt_id, or a LorakitError naming each node and input ComfyUI rejected."""
    status, body = _request(url, "/prompt", {"prompt": workflow, "client_id": client_id})
    try:
        answer = json.loads(body)
    except json.JSONDecodeError:
        raise LorakitError(f"ComfyUI failed on the prompt (HTTP {status}): {body.decode(errors='replace').strip()}",
                           hint="ComfyUI's console shows the traceback; check that the workflow is API format")
    if status == 200 and "prompt_id" in answer and not answer.get("node_errors"):
        return answer["prompt_id"]
    if status == 200 and "prompt_id" in answer:  # queued with some outputs invalid: don't leave it rendering
        _request(url, "/queue", {"delete": [answer["prompt_id"]]})
    kinds = [(answer.get("error") or {}).get("type")] + [
        e.get("type") for n in (answer.get("node_errors") or {}).values() for e in n.get("errors", [])]
    if isinstance(workflow.get("nodes"), list):  # a UI-format graph sent by mistake
        kinds.insert(0, "no_prompt")
    hint = next((_HINTS[k] for k in kinds if k in _HINTS), None)
    raise LorakitError(f"ComfyUI refused the workflow: {describe_prompt_error(answer, workflow)}", hint=hint)


def history(url: str, prompt_id: str) -> dict | None:
    """GET /history/<id>: the entry (prompt, outputs, status, meta), or None while ComfyUI has none yet."""
    return _json(url, f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)


def output_images(entry: dict) -> list[dict]:
    """Images (filename, subfolder, type) of a finished history entry; raise with the node that failed."""
    status = entry.get("status") or {}
    if status.get("status_str") == "error":
        for kind, data in status.get("messages", []):
            if kind == "execution_error":
                raise LorakitError(_execution_error_text(data))
        raise LorakitError("ComfyUI reports the run failed without an execution_error message")
    return [img for node in (entry.get("outputs") or {}).values() for img in node.get("images", [])]


def view(url: str, image: dict) -> bytes:
    """GET /view for one output image: the file's bytes."""
    query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
    status, body = _request(url, f"/view?{query}")
    if status != 200:
        raise LorakitError(f"ComfyUI has no image {image.get('filename')!r} in {image.get('type')}/"
                           f"{image.get('subfolder', '')} (HTTP {status})")
    return body


def lora_names(url: str) -> list[str]:
    """GET /models/loras: the LoRA file names ComfyUI offers (what LoraLoader's lora_name accepts)."""
    return _json(url, "/models/loras")


def queue(url: str) -> dict:
    return _json(url, "/queue")


def in_queue(url: str, prompt_id: str) -> bool:
    """Whether `prompt_id` is running or waiting (GET /queue lists [number, prompt_id, prompt, extra, outputs])."""
    answer = queue(url)
    return any(len(item) > 1 and item[1] == prompt_id
               for key in ("queue_running", "queue_pending") for item in answer.get(key, []))


def lora_metadata(url: str, name: str) -> dict | None:
    """GET /view_metadata/loras: the safetensors `__metadata__` of ComfyUI's copy of `name` (None: it has none)."""
    status, body = _request(url, f"/view_metadata/loras?{urllib.parse.urlencode({'filename': name})}")
    return json.loads(body) if status == 200 and body else None


def system_stats(url: str) -> dict:
    return _json(url, "/system_stats")


# ---- websocket message sequence (pure) ----

@dataclass
class RunState:
    state: str = "waiting"  # waiting | running | done | cached | error
    executed_nodes: list[str] = field(default_factory=list)
    cached_nodes: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    previews: int = 0
    error_node: str | None = None
    error_class: str | None = None
    error_message: str | None = None
    finished: bool = False  # ComfyUI is done with the prompt and has written its history

    def update(self, message: Any, prompt_id: str) -> tuple[int, int] | None:
        """Take in one message; returns (value, max) for a sampler progress message of this prompt."""
        if isinstance(message, dict) and "kind" in message:  # a recorded entry
            message = message.get("data") if message["kind"] == "text" else b""
        if isinstance(message, (bytes, bytearray)):
            self.previews += 1  # a latent preview image; only counted
            return None
        if isinstance(message, str):
            message = json.loads(message)
        kind, data = message.get("type"), message.get("data") or {}
        if data.get("prompt_id") != prompt_id:
            return None  # status messages and other clients' prompts
        if kind == "execution_start":
            self.state = "running"
        elif kind == "execution_cached":
            self.cached_nodes += data.get("nodes", [])
        elif kind == "executing":
            if data.get("node") is None:  # sent after the history entry is written (ComfyUI's main.py)
                self.finished = True
            else:
                self.executed_nodes.append(data["node"])
        elif kind == "executed":
            self.images += (data.get("output") or {}).get("images", [])
        elif kind == "progress":
            return int(data.get("value", 0)), int(data.get("max", 0))
        elif kind == "execution_success":
            self.state = "done" if self.executed_nodes else "cached"
        elif kind == "execution_error":
            self.state, self.error_node, self.error_class = "error", data.get("node_id"), data.get("node_type")
            self.error_message = _execution_error_text(data)
        elif kind == "execution_interrupted":
            self.state, self.error_node, self.error_class = "error", data.get("node_id"), data.get("node_type")
            self.error_message = (f"the prompt was interrupted in ComfyUI (Cancel, or /interrupt) in node "
                                  f"{data.get('node_id')} ({data.get('node_type')})")
        return None


def _execution_error_text(data: dict) -> str:
    return (f"ComfyUI failed in node {data.get('node_id')} ({data.get('node_type')}): "
            f"{data.get('exception_type', 'error')}: {str(data.get('exception_message', '')).strip()}")


def follow_messages(messages: list, prompt_id: str) -> RunState:
    """Interpret /ws messages for one prompt. Accepts recorded entries ({"kind": "text"|"binary", "data"}),
    raw {"type", "data"} dicts, JSON text, or bytes (preview frames)."""
    run = RunState()
    for message in messages:
        run.update(message, prompt_id)
    return run


def websocket_url(url: str, client_id: str) -> str:
    """ComfyUI's /ws address for `url` (http → ws, https → wss), as its own web client builds it."""
    parts = urllib.parse.urlsplit(url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws",
                                    urllib.parse.urlencode({"clientId": client_id}), ""))


class Connection:
    """A websocket to ComfyUI's /ws, opened before the prompt is submitted so that no message is missed."""

    def __init__(self, url: str, client_id: str, check_every: float = 30.0) -> None:
        import websocket  # websocket-client, the library ComfyUI's own API examples use

        self._errors, self._timeout = websocket.WebSocketException, websocket.WebSocketTimeoutException
        self.url, self.client_id, self.check_every = url, client_id, check_every
        try:
            self.socket = websocket.create_connection(websocket_url(url, client_id), timeout=check_every)
        except (OSError, websocket.WebSocketException) as exc:
            raise LorakitError(f"ComfyUI is not reachable at {url} (websocket /ws): start it, or check --comfy-url "
                               f"({exc})") from exc
        try:  # ComfyUI registers the socket, then sends its status with our sid: after it, no message is lost
            self.socket.recv()
        except (OSError, websocket.WebSocketException):
            pass  # no greeting in time: the prompt is still followed, and /history has the result

    def follow(self, prompt_id: str, progress: Callable[[int, int], None] | None = None) -> RunState:
        """Read messages until ComfyUI is done with `prompt_id` (or it failed); `progress(value, max)` gets the
        sampler's steps. No time limit while the prompt waits or runs: every `check_every` seconds without a word
        about it, /queue says whether it is still there (a prompt deleted from the queue ends the wait)."""
        run, last = RunState(), time.monotonic()
        while not run.finished and run.state != "error":
            try:
                message = self.socket.recv()
            except self._timeout:
                message = None
            except (OSError, self._errors) as exc:  # a closed socket
                raise LorakitError(f"lost ComfyUI's progress messages for prompt {prompt_id} at {self.url}: {exc}",
                                   hint="check that ComfyUI is still running; its console shows why") from exc
            if message is not None:
                before = (run.state, len(run.executed_nodes), run.finished)
                step = run.update(message, prompt_id)
                if step and progress:
                    progress(*step)
                if step or before != (run.state, len(run.executed_nodes), run.finished):
                    last = time.monotonic()
            if time.monotonic() - last > self.check_every and not run.finished:
                last = time.monotonic()
                if not in_queue(self.url, prompt_id):
                    if history(self.url, prompt_id) is None:
                        raise LorakitError(f"prompt {prompt_id} is gone from ComfyUI's queue without a result "
                                           "(deleted, or ComfyUI restarted)")
                    run.finished = True  # done while the socket missed it: the history has the result
        return run

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
