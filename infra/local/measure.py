#!/usr/bin/env python3
"""Measures each function binary as Lambda runs it: the binary talks to a local stand-in for
the Lambda Runtime API (on a free loopback port) while its AWS calls go to the local stack.

For each function and its sample event it reports the stripped binary size, process start to
the first `GET .../invocation/next` (ready), the invocation (event handed over to response
posted), and the peak resident set (VmHWM) after the response.

Usage: measure.py [--bin-dir target/release]
"""

import argparse
import http.server
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as local_stack  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# In this order: the scraper writes the pools the optimizer and the cost function read.
FUNCTIONS = [
    ("DiscoveryFunction", "events/discovery/schedule.json"),
    ("PricingScraperFunction", "events/pricing-scraper/sqs-scrape-region.json"),
    ("OptimizerFunction", "events/optimizer/sqs-optimize-request.json"),
    ("CostFunction", "events/cost/sqs-cost-sample.json"),
    ("InterruptionFunction", "events/interruption/sqs-spot-interruption-warning.json"),
    ("WebhookDispatcherFunction", "events/webhook-dispatcher/sqs-notification.json"),
    ("ApiFunction", "events/api/http-api-health.json"),
    ("SchedulerFunction", "events/scheduler/schedule.json"),
]


class RuntimeApi(http.server.ThreadingHTTPServer):
    """Hands out one event, records when the function asked for it and when it answered."""

    def __init__(self, event):
        self.event = event
        self.ready_at = None
        self.answered_at = None
        self.answer = None
        self.done = threading.Event()
        self.release = threading.Event()
        runtime = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if runtime.ready_at is not None:
                    # The second poll: the function is idle again; it waits until measured.
                    runtime.release.wait(30)
                    self.send_response(500)
                    self.end_headers()
                    return
                runtime.ready_at = time.monotonic()
                body = runtime.event.encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", "measure-1")
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 300_000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                                 "arn:aws:lambda:us-east-1:123456789012:function:measure")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                runtime.answer = (self.path, self.rfile.read(length))
                runtime.answered_at = time.monotonic()
                self.send_response(202)
                self.end_headers()
                runtime.done.set()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def measure(bin_dir, description, logical, event_path):
    function = description["functions"][logical]
    binary = os.path.join(bin_dir, function["binary"])
    runtime = RuntimeApi(local_stack.sample_event(ROOT, description, logical, event_path))
    env = dict(os.environ)
    env.update(function["env"])
    env.update({
        "AWS_ENDPOINT_URL": description["endpoint"], "AWS_REGION": description["region"],
        "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{runtime.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": logical, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512", "AWS_LAMBDA_LOG_GROUP_NAME": "local",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local", "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": "WARN", "SPOTWISE_DEV_MODE": "true",
    })
    started = time.monotonic()
    process = subprocess.Popen([binary], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    answered = runtime.done.wait(120)
    rss = peak_rss_kib(process.pid) if answered and process.poll() is None else 0
    runtime.release.set()
    process.kill()
    _, stderr = process.communicate(timeout=10)
    runtime.shutdown()
    if not answered or runtime.ready_at is None:
        raise SystemExit(f"{logical} did not answer:\n{stderr.decode(errors='replace')}")
    path, body = runtime.answer
    outcome = "error" if path.endswith("/error") else "ok"
    return {
        "function": logical, "binary": function["binary"], "size_mb": os.path.getsize(binary) / 1e6,
        "ready_ms": (runtime.ready_at - started) * 1000,
        "invoke_ms": (runtime.answered_at - runtime.ready_at) * 1000,
        "rss_mb": rss / 1024, "outcome": outcome, "answer": body[:120].decode(errors="replace"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    args = parser.parse_args()
    server, stack, _ = local_stack.start_seeded(ROOT, {"ScrapeRegions": "us-east-1"})
    try:
        description = stack.describe()
        # The optimizer and the cost function work on the agent's snapshot of the seeded cluster.
        optimizer = description["functions"]["OptimizerFunction"]
        env = dict(os.environ, **optimizer["env"], AWS_ENDPOINT_URL=description["endpoint"],
                   AWS_REGION=description["region"], AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local")
        env.pop("AWS_LAMBDA_RUNTIME_API", None)
        subprocess.run([os.path.join(args.bin_dir, optimizer["binary"]), "put-snapshot", "--tenant", "t1",
                        "--cluster", "111122223333.us-east-1.prod-us-east-1",
                        "--file", "events/optimizer/kubectl-snapshot.json"],
                       cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)
        print(f"{'function':<27} {'binary':<19} {'MB':>6} {'ready ms':>9} {'invoke ms':>10} {'peak RSS MB':>12}  outcome")
        for logical, event in FUNCTIONS:
            m = measure(args.bin_dir, description, logical, event)
            print(f"{m['function']:<27} {m['binary']:<19} {m['size_mb']:>6.1f} {m['ready_ms']:>9.1f} "
                  f"{m['invoke_ms']:>10.1f} {m['rss_mb']:>12.1f}  {m['outcome']}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
