#!/usr/bin/env python3
"""A 20,000-pod cluster through upload, plan and cost on the local stack, with the release
binaries as Lambda runs them: the time and peak resident memory of each function.

1. `spotwise-synthetic-snapshot` writes a snapshot of --nodes nodes and --pods pods with
   realistic labels, annotations, tolerations and PDBs.
2. The agent's upload against `api serve`: the upload ticket, the PUT of the gzip body to the
   presigned URL (moto's S3), and the confirmation, which reads the object back and validates it.
3. The scraper's region, then the optimizer and the cost sample of the seeded cluster, each
   binary under the loopback Lambda Runtime API stand-in of measure.py.

Usage: scale.py [--nodes 1000] [--pods 20000] [--type m5.4xlarge] [--bin-dir target/release]
"""

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402
import stack as local_stack  # noqa: E402

ROOT = measure.ROOT
CLUSTER = "111122223333.us-east-1.prod-us-east-1"


def call(method, url, key=None, body=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if body is not None and not isinstance(body, bytes):
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=300) as response:
        text = response.read()
        return json.loads(text) if text else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=20000)
    parser.add_argument("--type", default="m5.4xlarge")
    parser.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    args = parser.parse_args()

    snapshot = subprocess.run(
        [os.path.join(args.bin_dir, "spotwise-synthetic-snapshot"), "--nodes", str(args.nodes),
         "--pods", str(args.pods), "--type", args.type],
        cwd=ROOT, check=True, capture_output=True).stdout
    started = time.monotonic()
    body = gzip.compress(snapshot, compresslevel=1)
    digest = hashlib.sha256(snapshot).hexdigest()
    encode_ms = (time.monotonic() - started) * 1000
    print(f"snapshot: {args.nodes} nodes, {args.pods} pods (+{2 * args.nodes} daemon pods): "
          f"{len(snapshot) / 2**20:.1f} MiB JSON, {len(body) / 2**20:.2f} MiB gzip (level 1, {encode_ms:.0f} ms)\n")

    server, stack, _ = local_stack.start_seeded(ROOT, {"ScrapeRegions": "us-east-1"})
    api = None
    try:
        description = stack.describe()
        function = description["functions"]["ApiFunction"]
        env = dict(os.environ, **function["env"], AWS_ENDPOINT_URL=description["endpoint"],
                   AWS_REGION=description["region"], AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local",
                   SPOTWISE_DEV_MODE="true", RUST_LOG="warn")
        env.pop("AWS_LAMBDA_RUNTIME_API", None)
        binary = os.path.join(args.bin_dir, function["binary"])
        admin = json.loads(subprocess.run([binary, "bootstrap", "--tenant", "t1", "--name", "Acme"], cwd=ROOT,
                                          env=env, check=True, capture_output=True, text=True).stdout)["admin_key"]
        api = subprocess.Popen([binary, "serve", "--addr", "127.0.0.1:0"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, text=True)
        base = api.stdout.readline().strip().removeprefix("listening on ")
        agent = call("POST", f"{base}/v1/keys", admin,
                     {"name": "agent", "role": "agent", "cluster_id": CLUSTER})["secret"]

        print(f"{'step':<34} {'ms':>9} {'peak RSS MB':>12}")
        started = time.monotonic()
        ticket = call("POST", f"{base}/v1/agent/snapshot-uploads", agent, {"sha256": digest, "size": len(body)})
        ticket_ms = (time.monotonic() - started) * 1000
        started = time.monotonic()
        headers = {k: v for k, v in ticket["headers"].items() if k != "content-length"}
        call("PUT", ticket["url"], body=body, headers=headers)
        put_ms = (time.monotonic() - started) * 1000
        started = time.monotonic()
        stored = call("POST", f"{base}/v1/agent/snapshot-uploads/{ticket['upload_id']}/confirm", agent)
        confirm_ms = (time.monotonic() - started) * 1000
        api_rss = measure.peak_rss_kib(api.pid) / 1024
        print(f"{'api: upload ticket':<34} {ticket_ms:>9.0f}")
        print(f"{'agent: PUT to S3 (presigned)':<34} {put_ms:>9.0f}")
        print(f"{'api: confirm (read, validate)':<34} {confirm_ms:>9.0f} {api_rss:>12.1f}   "
              f"{stored['nodes']} nodes, {stored['pods']} pods stored")

        for logical, event in [("PricingScraperFunction", "events/pricing-scraper/sqs-scrape-region.json"),
                               ("OptimizerFunction", "events/optimizer/sqs-optimize-request.json"),
                               ("CostFunction", "events/cost/sqs-cost-sample.json")]:
            m = measure.measure(args.bin_dir, description, logical, event)
            print(f"{m['binary'] + ': ' + os.path.basename(event):<34} {m['invoke_ms']:>9.0f} {m['rss_mb']:>12.1f}   "
                  f"{m['outcome']} {m['answer'][:60]}")
        plans = call("GET", f"{base}/v1/clusters/{CLUSTER}/recommendations?limit=1", admin)["items"]
        hours = call("GET", f"{base}/v1/clusters/{CLUSTER}/costs?granularity=hour&dimension=summary", admin)["items"]
        if not plans or not hours:
            raise SystemExit(f"the cluster was not planned or costed: {plans} {hours}")
        print(f"\nplanned: revision {plans[0].get('revision')}, {json.dumps(plans[0])[:160]}...")
        print(f"costed: {hours[-1]['period']}, {json.dumps(hours[-1]['summary']['total'])[:160]}")
    finally:
        if api is not None:
            api.kill()
        server.stop()


if __name__ == "__main__":
    main()
