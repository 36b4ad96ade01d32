"""Drives the router with the official `openai` Python client (non-streaming and streaming).

Usage: python3 openai_client.py BASE_URL EXPECTED_TEXT
Prints one JSON line with what it observed; exits non-zero on any failure.
"""
import json
import sys

import openai

base_url, expected = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=20)
out = {}

raw = client.chat.completions.with_raw_response.create(
    model="auto", messages=[{"role": "user", "content": "an integral please"}]
)
chat = raw.parse()
out["chat_text"] = chat.choices[0].message.content
out["chat_model_header"] = raw.headers.get("x-lookahead-model")
out["chat_scores_header"] = raw.headers.get("x-lookahead-scores")

pieces = []
for chunk in client.chat.completions.create(
    model="auto", stream=True, messages=[{"role": "user", "content": "an integral please"}]
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
out["stream_text"] = "".join(pieces)
out["stream_chunks"] = len(pieces)

comp = client.completions.create(model="general", prompt="an integral please")
out["completion_text"] = comp.choices[0].text

out["models"] = [m.id for m in client.models.list().data]

try:
    client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    out["unknown_model"] = "no error"
except openai.NotFoundError as e:
    out["unknown_model"] = e.status_code

assert out["chat_text"] == expected, out
assert out["stream_text"] == expected, out
assert out["stream_chunks"] > 1, out
assert out["chat_model_header"] == "math", out
print(json.dumps(out))
