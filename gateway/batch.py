"""`python -m gateway.batch`: batch jobs from a shell, for a user with no SDK at hand.

    python -m gateway.batch submit requests.jsonl [--wait]   upload, start the batch, print its id
    python -m gateway.batch status BATCH_ID [--wait]         its state; --wait: a progress bar until it ends
    python -m gateway.batch download BATCH_ID [-o FILE] [--errors]

The gateway is TORCHGATE_URL (default http://127.0.0.1:8000), the key TORCHGATE_API_KEY (or --api-key).
"""

import argparse
import json
import os
import sys
import time

import httpx
from tqdm import tqdm

FINISHED = ("completed", "failed", "expired", "cancelled")
POLL_S = 1.0


def _client(args) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    return httpx.Client(base_url=args.url, headers=headers, timeout=httpx.Timeout(60, connect=5))


def _checked(reply: httpx.Response) -> dict:
    if reply.is_error:
        try:
            message = reply.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = reply.text
        raise SystemExit(f"error {reply.status_code}: {message}")
    return reply.json()


def _endpoint(path: str) -> str:
    with open(path, "rb") as lines:
        for line in lines:
            if line.strip():
                try:
                    return json.loads(line)["url"]
                except (ValueError, KeyError, TypeError):
                    raise SystemExit(f"{path}: the first request is not a JSON object with a url") from None
    raise SystemExit(f"{path}: no requests")


def _watch(client: httpx.Client, batch_id: str) -> dict:
    """A progress bar (lines answered, rate, time left) until the batch ends; the batch as it ended."""
    batch = _checked(client.get(f"/v1/batches/{batch_id}"))
    with tqdm(total=batch["request_counts"]["total"], unit="line", desc=batch_id, file=sys.stderr) as bar:
        while True:
            counts = batch["request_counts"]
            bar.update(counts["completed"] + counts["failed"] - bar.n)
            bar.set_postfix(status=batch["status"], failed=counts["failed"])
            if batch["status"] in FINISHED:
                return batch
            time.sleep(POLL_S)
            batch = _checked(client.get(f"/v1/batches/{batch_id}"))


def submit(args) -> None:
    with _client(args) as client:
        with open(args.file, "rb") as upload:
            uploaded = _checked(client.post("/v1/files", files={"file": (os.path.basename(args.file), upload)},
                                            data={"purpose": "batch"}, timeout=httpx.Timeout(600, connect=5)))
        batch = _checked(client.post("/v1/batches", json={"input_file_id": uploaded["id"],
                                                          "endpoint": args.endpoint or _endpoint(args.file),
                                                          "completion_window": "24h"}))
        print(batch["id"])
        if args.wait:
            _report(_watch(client, batch["id"]))


def status(args) -> None:
    with _client(args) as client:
        _report(_watch(client, args.batch_id) if args.wait else _checked(client.get(f"/v1/batches/{args.batch_id}")))


def _report(batch: dict) -> None:
    counts = batch["request_counts"]
    print(json.dumps({"id": batch["id"], "status": batch["status"], **counts,
                      "output_file_id": batch["output_file_id"], "error_file_id": batch["error_file_id"]}))


def download(args) -> None:
    with _client(args) as client:
        batch = _checked(client.get(f"/v1/batches/{args.batch_id}"))
        file_id = batch["error_file_id" if args.errors else "output_file_id"]
        if file_id is None:
            raise SystemExit(f"batch {args.batch_id} has no {'error' if args.errors else 'output'} file "
                             f"(status {batch['status']})")
        out = open(args.output, "wb") if args.output else sys.stdout.buffer
        try:
            with client.stream("GET", f"/v1/files/{file_id}/content", timeout=httpx.Timeout(600, connect=5)) as reply:
                if reply.is_error:
                    reply.read()
                    _checked(reply)
                for chunk in reply.iter_bytes():
                    out.write(chunk)
        finally:
            if args.output:
                out.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("TORCHGATE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("TORCHGATE_API_KEY", ""))
    commands = parser.add_subparsers(dest="command", required=True)
    submitting = commands.add_parser("submit", help="upload a JSONL file and start its batch")
    submitting.add_argument("file")
    submitting.add_argument("--endpoint", help="the url of the file's lines (default: the first line's)")
    submitting.add_argument("--wait", action="store_true", help="show progress until the batch ends")
    submitting.set_defaults(run=submit)
    showing = commands.add_parser("status", help="a batch's state")
    showing.add_argument("batch_id")
    showing.add_argument("--wait", action="store_true", help="show progress until the batch ends")
    showing.set_defaults(run=status)
    fetching = commands.add_parser("download", help="a batch's output (or error) file")
    fetching.add_argument("batch_id")
    fetching.add_argument("-o", "--output", help="write here instead of stdout")
    fetching.add_argument("--errors", action="store_true", help="the error file instead of the output")
    fetching.set_defaults(run=download)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except httpx.TransportError as error:
        raise SystemExit(f"cannot reach the gateway at {args.url}: {error}") from None


if __name__ == "__main__":
    main()
