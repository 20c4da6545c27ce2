"""The official OpenAI Python SDK against a running Turnout, unchanged.

Usage: python3 tests/sdk/openai_sdk_check.py [path/to/turnout]
Starts `turnout serve` on a copy of the shipped config.yaml (free loopback ports),
runs chat, streaming chat with include_usage, embeddings, models, Responses
(streamed and not), a file upload and its retrieval (pass-through) and an audio
transcription (a multipart form routed by its `model`) through the SDK, and
stops the process by its PID. Prints `N passed, M failed`.
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import openai

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary):
    port, admin = free_port(), free_port()
    text = open(os.path.join(ROOT, "config.yaml")).read()
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace("127.0.0.1:9090", f"127.0.0.1:{admin}")
    tmp = tempfile.mkdtemp(prefix="turnout-sdk-")
    text = text.replace("state_path: turnout-state.json", f"state_path: {tmp}/state.json")
    cfg = os.path.join(tmp, "config.yaml")
    open(cfg, "w").write(text)
    log = open(os.path.join(tmp, "turnout.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("turnout did not start; log: " + open(log.name).read())


def checks(client):
    def chat():
        r = client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content, r
        assert r.usage.completion_tokens > 0, r
        raw = client.chat.completions.with_raw_response.create(model="gpt-4.1", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers.get("x-turnout-upstream") in ("official-sim", "relay-sim"), raw.headers
        assert int(raw.headers.get("x-turnout-attempts")) >= 1

    def stream_with_usage():
        text, usage = "", None
        for chunk in client.chat.completions.create(
            model="claude-3.5-sonnet",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.usage:
                usage = chunk.usage
        assert text.startswith("Hello from"), text
        assert usage and usage.completion_tokens > 0, usage

    def embeddings():
        r = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        assert len(r.data) == 2 and len(r.data[0].embedding) > 0

    def models():
        ids = [m.id for m in client.models.list()]
        assert "claude-3.5-sonnet" in ids, ids

    def responses():
        r = client.responses.create(model="gpt-4.1", input="hi")
        assert r.status == "completed", r
        assert r.output_text.startswith("Hello from"), r.output_text
        assert r.usage.output_tokens > 0, r.usage
        raw = client.responses.with_raw_response.create(model="gpt-4.1", input="hi")
        assert raw.headers.get("x-turnout-upstream") in ("official-sim", "relay-sim"), raw.headers
        assert raw.headers.get("x-turnout-request-id"), raw.headers

    def responses_stream():
        text, kinds, usage = "", [], None
        for event in client.responses.create(model="gpt-4.1", input="hi", stream=True):
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
            if event.type == "response.completed":
                usage = event.response.usage
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
        assert "error" not in kinds, kinds
        assert text.startswith("Hello from"), text
        assert usage and usage.output_tokens > 0, usage

    def files():
        content = b'{"custom_id":"1","method":"POST","url":"/v1/chat/completions","body":{}}\n'
        f = client.files.create(file=("batch.jsonl", content), purpose="batch")
        assert f.id and f.bytes == len(content), f
        got = client.files.retrieve(f.id)
        assert (got.id, got.filename, got.purpose) == (f.id, "batch.jsonl", "batch"), got
        assert client.files.content(f.id).read() == content
        assert f.id in [x.id for x in client.files.list()]
        assert client.files.delete(f.id).deleted
        try:
            client.files.retrieve(f.id)
        except openai.NotFoundError as e:
            assert e.status_code == 404
        else:
            raise AssertionError("expected a 404 after delete")

    def transcription():
        audio = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256))
        t = client.audio.transcriptions.create(model="whisper-1", file=("hello.wav", audio))
        assert t.text.startswith("Hello from") and str(len(audio)) in t.text, t.text

    def errors():
        try:
            client.chat.completions.create(model="gpt-4.1", messages="not-a-list", extra_body={"stream": "yes"})
        except openai.BadRequestError as e:
            assert e.status_code == 400
        else:
            raise AssertionError("expected a 400")

    return [chat, stream_with_usage, embeddings, models, responses, responses_stream, files, transcription, errors]


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/turnout")
    proc, base = start(binary)
    passed = failed = 0
    try:
        # The demo primary fails ~5% of requests: failover must hide that, so no retries here.
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=30)
        for check in checks(client):
            try:
                check()
                passed += 1
                print(f"ok   {check.__name__}")
            except Exception as e:  # noqa: BLE001 - report every failure
                failed += 1
                print(f"FAIL {check.__name__}: {e!r}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
