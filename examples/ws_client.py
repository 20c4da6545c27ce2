#!/usr/bin/env python3
"""Turnout WebSocket chat client: the usage of the seed articles' clients.

Run Turnout with the repository's config.yaml (no keys, simulated providers):

    cargo run --release -- serve
    pip install websockets          # version 13 or later
    python3 examples/ws_client.py   # or: --demo chat|conversation|parallel|cancel

With client keys configured, pass one with --key (sent as `Authorization:
Bearer`) or --key plus --query-token (sent as `?token=`, as a browser must).
A bad or missing key closes the socket with code 4001.

Messages (see docs/websocket.md):
  client: {"id","model","messages",...}  a chat request (any chat-completions field)
          {"type":"message","content"}   a turn of the connection's conversation
          {"type":"clear"} / {"type":"cancel","id"}
  server: {"type":"delta","id","content"} ... then
          {"type":"done","id","finish_reason","usage"} or {"type":"error","id","error"}
"""

import argparse
import asyncio
import json
import os
import sys
import urllib.parse

import websockets


async def connect(args, **query):
    """Opens the socket; the key goes in a header, or in ?token= for browsers."""
    headers = {}
    if args.key and args.query_token:
        query["token"] = args.key
    elif args.key:
        headers["Authorization"] = f"Bearer {args.key}"
    url = args.url + ("?" + urllib.parse.urlencode(query) if query else "")
    return await websockets.connect(url, additional_headers=headers)


async def answer(ws, req_id, out=sys.stdout):
    """Prints the deltas of one request; returns its `done` or `error` message."""
    async for raw in ws:
        msg = json.loads(raw)
        if msg.get("id") != req_id:
            continue
        if msg["type"] == "delta":
            out.write(msg["content"])
            out.flush()
        else:
            out.write("\n")
            return msg


def report(end):
    if end["type"] == "done":
        usage = end.get("usage") or {}
        print(f"[{end['id']}] done: {end['finish_reason']}, "
              f"{usage.get('total_tokens', '?')} tokens")
    else:
        print(f"[{end['id']}] error: {end['error']['code']}: {end['error']['message']}")


async def chat(args):
    """One chat request, as the seeds' `chat_websocket` sends it."""
    async with await connect(args) as ws:
        await ws.send(json.dumps({
            "id": "r1",
            "model": args.model,
            "messages": [
                {"role": "system", "content": "Bạn là trợ lý AI thông minh."},
                {"role": "user", "content": "Giải thích WebSocket streaming là gì?"},
            ],
            "temperature": 0.7,
        }))
        report(await answer(ws, "r1"))


async def conversation(args):
    """The server keeps the history: `message` turns, then `clear`."""
    async with await connect(args, model=args.model, user="demo-user") as ws:
        for i, text in enumerate(["Xin chào, hãy giải thích về AI streaming",
                                  "Cho một ví dụ ngắn"]):
            await ws.send(json.dumps({"type": "message", "content": text, "id": f"m{i}"}))
            report(await answer(ws, f"m{i}"))
        await ws.send(json.dumps({"type": "clear"}))
        await ws.send(json.dumps({"type": "message", "content": "Bắt đầu lại", "id": "m2"}))
        report(await answer(ws, "m2"))


async def parallel(args):
    """Two requests at once on one socket, told apart by their ids."""
    async with await connect(args) as ws:
        for rid in ("a", "b"):
            await ws.send(json.dumps({
                "id": rid, "model": args.model,
                "messages": [{"role": "user", "content": f"Request {rid}"}],
            }))
        texts, pending = {"a": "", "b": ""}, {"a", "b"}
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "delta":
                texts[msg["id"]] += msg["content"]
            else:
                report(msg)
                pending.discard(msg["id"])
                if not pending:
                    break
        for rid, text in texts.items():
            print(f"[{rid}] {text}")


async def cancel(args):
    """Stops a generation after its first piece; the upstream request is dropped."""
    async with await connect(args) as ws:
        await ws.send(json.dumps({
            "id": "long", "model": args.model,
            "messages": [{"role": "user", "content": "Viết một bài dài"}],
        }))
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "delta":
                print(f"first piece: {msg['content']!r}; cancelling")
                await ws.send(json.dumps({"type": "cancel", "id": "long"}))
                break
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] != "delta":
                report(msg)  # done, finish_reason "cancelled"
                break


DEMOS = {"chat": chat, "conversation": conversation, "parallel": parallel, "cancel": cancel}


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default=os.environ.get("TURNOUT_WS_URL",
                                                   "ws://127.0.0.1:8080/v1/ws/chat"))
    p.add_argument("--key", default=os.environ.get("TURNOUT_KEY"))
    p.add_argument("--query-token", action="store_true", help="send the key as ?token=")
    p.add_argument("--model", default="gpt-4.1")
    p.add_argument("--demo", choices=[*DEMOS, "all"], default="all")
    args = p.parse_args()
    try:
        for name, demo in DEMOS.items():
            if args.demo in (name, "all"):
                print(f"--- {name}")
                await demo(args)
    except websockets.exceptions.ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd else None
        hint = " (invalid API key: use --key)" if code == 4001 else ""
        sys.exit(f"connection closed: {code}{hint}")


if __name__ == "__main__":
    asyncio.run(main())
