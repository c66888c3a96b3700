"""A stand-in ComfyUI server for tests: HTTP routes and the /ws websocket, answering with the shapes of real ComfyUI
0.3.64 responses recorded in ../shared/testdata/comfyui-captures.

Each accepted `POST /prompt` replays the recorded websocket sequence of a successful LoRA run
(ws_success_lora.json) and the recorded history entry (run_lora_s1_history.json) with the new prompt id and this
run's output files; SaveImage's prefix is split into subfolder and file name as ComfyUI's SaveImage does
(`<prefix>_00001_.png`). The websocket side is the minimal RFC 6455 server framing (unmasked frames out, masked
frames in), enough for a real client library to talk to it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import queue
import select
import struct
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

CAPTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "comfyui-captures"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


def capture(name: str) -> dict:
    return json.loads((CAPTURES / name).read_text(encoding="utf-8"))


def frame(payload: bytes, opcode: int) -> bytes:
    """One unmasked, final server frame (RFC 6455 section 5.2)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return header + payload


def read_frame(sock) -> tuple[int, bytes]:
    """(opcode, payload) of one masked client frame."""
    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("client went away")
            data += chunk
        return data

    first, second = exact(2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", exact(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", exact(8))[0]
    mask = exact(4) if second & 0x80 else b"\0\0\0\0"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(exact(size)))
    return first & 0x0F, payload


ImageMaker = Callable[[dict, int], bytes]  # (submitted workflow, batch index) → PNG bytes


class ComfyStandIn:
    """Start with `with ComfyStandIn(make_image) as comfy:`; `comfy.url` is its address."""

    def __init__(self, make_image: ImageMaker, loras_dir: Path | None = None) -> None:
        self.make_image, self.loras_dir = make_image, loras_dir
        self.prompts: list[dict] = []  # every accepted /prompt request body
        self.deleted: list[str] = []  # prompt ids deleted through POST /queue
        self.prompt_ids: list[str] = []  # the id given to each accepted prompt
        self.reject: dict | None = None  # a captured err_*.json to answer /prompt with instead
        self.fail_with: dict | None = None  # a captured ws sequence with execution_error to replay instead
        self.template = "ws_success_lora.json"  # the recorded success sequence each run replays
        self.silent = False  # accept prompts but never run them
        self.accept_with_errors: dict | None = None  # node_errors to answer HTTP 200 with (some outputs invalid)
        self.history: dict[str, dict] = {}
        self.files: dict[tuple[str, str], bytes] = {}  # (subfolder, filename) → bytes
        self.sockets: dict[str, queue.Queue] = {}  # clientId → messages to send
        self.counter = 0
        self.lock = threading.Lock()

    # -- server lifetime --
    def __enter__(self) -> "ComfyStandIn":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                standin.get(self)

            def do_POST(self) -> None:  # noqa: N802
                standin.post(self)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- HTTP --
    @staticmethod
    def answer(handler, status: int, body, content_type: str = "application/json; charset=utf-8") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def get(self, handler) -> None:
        parts = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        if parts.path == "/ws":
            return self.websocket(handler, query.get("clientId", ""))
        if parts.path == "/view_metadata/loras":  # server.py view_metadata: the file's __metadata__, else 404
            from safetensors import safe_open

            path = (self.loras_dir or Path("/nonexistent")) / query.get("filename", "")
            metadata = None
            if path.is_file():
                with safe_open(str(path), "pt") as f:
                    metadata = f.metadata()
            return self.answer(handler, 200, metadata) if metadata else self.answer(handler, 404, b"", "text/plain")
        if parts.path == "/models/loras":
            names = sorted(p.name for p in self.loras_dir.iterdir()) if self.loras_dir else \
                capture("get_models_loras.json")["body"]
            return self.answer(handler, 200, names)
        if parts.path.startswith("/history/"):
            prompt_id = parts.path.rsplit("/", 1)[1]
            return self.answer(handler, 200, {prompt_id: self.history[prompt_id]} if prompt_id in self.history
                               else capture("get_history_unknown_id.json")["body"])
        if parts.path == "/view":
            key = (query.get("subfolder", ""), query.get("filename", ""))
            if key in self.files:
                return self.answer(handler, 200, self.files[key], "image/png")
            return self.answer(handler, 404, b"", "text/plain")  # get_view_missing_file.json: 404, empty body
        for cap in CAPTURES.glob("get_*.json"):  # the other recorded GET endpoints, answered as recorded
            recorded = capture(cap.name)
            if recorded["request"]["path"] == handler.path and isinstance(recorded["body"], (dict, list)):
                return self.answer(handler, recorded["status"], recorded["body"])
        self.answer(handler, 404, b"", "text/plain")

    def post(self, handler) -> None:
        body = json.loads(handler.rfile.read(int(handler.headers.get("Content-Length") or 0)))
        if urllib.parse.urlsplit(handler.path).path == "/queue":  # {"delete": [...]} or {"clear": true}
            self.deleted += body.get("delete", [])
            return self.answer(handler, 200, b"", "text/plain")
        if urllib.parse.urlsplit(handler.path).path != "/prompt":
            return self.answer(handler, 404, b"", "text/plain")
        if self.reject is not None:
            return self.answer(handler, self.reject["status"], self.reject["body"])
        with self.lock:
            self.counter += 1
            number, prompt_id = self.counter, str(uuid.uuid4())
            self.prompts.append(body)
            self.prompt_ids.append(prompt_id)
        self.run(prompt_id, body)
        self.answer(handler, 200, {"prompt_id": prompt_id, "number": number,
                                   "node_errors": self.accept_with_errors or {}})

    # -- a run: files, history entry and the websocket sequence --
    def run(self, prompt_id: str, body: dict) -> None:
        if self.silent:  # accepted, then never run (as a prompt deleted from the queue by someone else)
            return
        workflow = body["prompt"]
        template = self.fail_with or capture(self.template)
        old_id = template["prompt_response"]["body"]["prompt_id"]
        save_id = next(i for i, n in workflow.items() if n["class_type"] == "SaveImage")
        batch = next(n["inputs"]["batch_size"] for n in workflow.values() if n["class_type"] == "EmptyLatentImage")
        subfolder, _, stem = workflow[save_id]["inputs"]["filename_prefix"].rpartition("/")
        images = []
        for index in range(batch):
            name = f"{stem}_{self.counter * 100 + index:05d}_.png"
            self.files[(subfolder, name)] = self.make_image(workflow, index)
            images.append({"filename": name, "subfolder": subfolder, "type": "output"})
        messages: list[tuple[int, object]] = []  # (opcode, payload); opcode 0: a server step to run
        for recorded in template["messages"]:
            if recorded["kind"] == "binary":  # a latent preview frame, as recorded where the file was kept
                saved = CAPTURES / Path(recorded.get("saved_as", "")).name
                messages.append((0x2, saved.read_bytes() if saved.is_file() else b"\0" * recorded["len"]))
                continue
            message = json.loads(json.dumps(recorded["data"]).replace(old_id, prompt_id))
            if message["type"] == "executed":
                message["data"]["output"]["images"] = images
            messages.append((0x1, json.dumps(message).encode()))
        entry = copy.deepcopy(capture("run_lora_s1_history.json"))
        entry["prompt"][1], entry["prompt"][2] = prompt_id, workflow
        preview = {"filename": "ComfyUI_temp_00001_.png", "subfolder": "", "type": "temp"}  # a PreviewImage's
        entry["outputs"] = {save_id: {"images": images}, "99": {"images": [preview]}}
        entry["status"] = json.loads(json.dumps(entry["status"]).replace(entry["status"]["messages"][0][1]["prompt_id"],
                                                                         prompt_id))
        if self.fail_with is not None:
            error = next(json.loads(m) for op, m in messages
                         if op == 1 and json.loads(m)["type"] in ("execution_error", "execution_interrupted"))
            entry["outputs"] = {}
            entry["status"] = {"status_str": "error", "completed": False,
                               "messages": [[error["type"], error["data"]]]}
        # ComfyUI writes the history after execution_success, then sends `executing` with node null (main.py's
        # prompt_worker): a client that reads /history at execution_success can find nothing yet
        last = max(i for i, (op, m) in enumerate(messages) if op == 1 and json.loads(m)["type"] == "executing")
        messages.insert(last, (0, lambda: self.history.__setitem__(prompt_id, entry)))
        self.sockets.setdefault(body["client_id"], queue.Queue()).put(messages)

    def websocket(self, handler, client_id: str) -> None:
        # the outbox exists before the handshake answer: a client may POST /prompt the moment it has that answer
        outbox = self.sockets.setdefault(client_id, queue.Queue())
        key = handler.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        handler.send_response(101, "Switching Protocols")
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", accept)
        handler.end_headers()
        handler.wfile.flush()
        sock = handler.connection
        first = capture("ws_success_lora.json")["messages"][0]["data"]  # the status message with the session id
        first["data"]["sid"] = client_id
        sock.sendall(frame(json.dumps(first).encode(), 0x1))
        while True:
            try:
                for opcode, message in outbox.get_nowait():
                    if opcode == 0:  # a step of the server, in order with the messages
                        message()
                    else:
                        sock.sendall(frame(message, opcode))
            except queue.Empty:
                pass
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                try:
                    opcode, payload = read_frame(sock)
                except ConnectionError:
                    break
                if opcode == 0x8:  # close: answer it, then end the connection
                    sock.sendall(frame(payload[:2], 0x8))
                    break
        handler.close_connection = True
