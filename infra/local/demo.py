#!/usr/bin/env python3
"""The local run: starts the local AWS stack from template.yaml, seeds a tenant, and invokes every
Spotwise function binary on its sample event from events/, printing what each did.

Run through scripts/run-local.sh, which builds the binaries first.
"""

import argparse
import hashlib
import hmac
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import boto3
from boto3.dynamodb.types import TypeDeserializer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as local_stack  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TENANT = "t1"
CLUSTER = "111122223333.us-east-1.prod-us-east-1"
WEBHOOK_SECRET = "whsec_local_0123456789abcdef"

STEPS = [
    ("DiscoveryFunction", "events/discovery/schedule.json"),
    # The hourly fan-out puts one message per region on the scrape queue; each scrapes its region.
    # The second hour finds nothing changed beyond tolerance and writes nothing.
    ("PricingScraperFunction", "events/pricing-scraper/schedule.json"),
    ("PricingScraperFunction", "queue:ScrapeQueue"),
    ("PricingScraperFunction", "events/pricing-scraper/schedule.json"),
    ("PricingScraperFunction", "queue:ScrapeQueue"),
    ("OptimizerFunction", "events/optimizer/schedule.json"),
    ("OptimizerFunction", "events/optimizer/sqs-optimize-request.json"),
    ("CostFunction", "events/cost/schedule-cost-sample.json"),
    ("CostFunction", "events/cost/sqs-cost-sample.json"),
    ("CostFunction", "events/cost/sqs-savings-report.json"),
    ("InterruptionFunction", "events/interruption/sqs-rebalance-recommendation.json"),
    ("InterruptionFunction", "events/interruption/sqs-spot-interruption-warning.json"),
    ("InterruptionFunction", "events/interruption/sqs-spot-interruption-warning.json"),
    ("InterruptionFunction", "events/interruption/sqs-asg-lifecycle-termination.json"),
    ("InterruptionFunction", "events/interruption/sqs-scheduled-change.json"),
    ("InterruptionFunction", "events/interruption/sqs-instance-state-change.json"),
    ("WebhookDispatcherFunction", "events/webhook-dispatcher/sqs-notification.json"),
    ("ApiFunction", "events/api/http-api-health.json"),
    ("SchedulerFunction", "events/scheduler/schedule.json"),
]


def function_env(description, logical):
    env = dict(os.environ)
    env.update(description["functions"][logical]["env"])
    env.update({
        "AWS_ENDPOINT_URL": description["endpoint"],
        "AWS_REGION": description["region"],
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "RUST_LOG": env.get("RUST_LOG", "warn"),
        # Lets the dispatcher deliver to the receiver on 127.0.0.1.
        "SPOTWISE_DEV_MODE": "true",
    })
    env.pop("AWS_LAMBDA_RUNTIME_API", None)
    return env


def sample_event(description, logical, event):
    """The path of `event` as the function receives it: a sample the local queues must be named
    on (local_stack.sample_event) is written to a temporary file, which the caller removes; any
    other event is used as it is."""
    if event not in local_stack.SAMPLE_QUEUES:
        return event
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(local_stack.sample_event(ROOT, description, logical, event))
    return f.name


def invoke(bin_dir, description, logical, event):
    binary = description["functions"][logical]["binary"]
    started = time.monotonic()
    result = subprocess.run(
        [os.path.join(bin_dir, binary), "invoke", "--event", event],
        cwd=ROOT, env=function_env(description, logical), capture_output=True, text=True, timeout=120,
    )
    elapsed_ms = (time.monotonic() - started) * 1000
    if result.returncode != 0:
        raise SystemExit(f"{binary} failed on {event} (exit {result.returncode}):\n{result.stderr}{result.stdout}")
    return json.loads(result.stdout), elapsed_ms


def serve_api(bin_dir, description):
    """Runs the API as a local HTTP server and calls it over the network."""
    process = subprocess.Popen(
        [os.path.join(bin_dir, "api"), "serve", "--addr", "127.0.0.1:0"],
        cwd=ROOT, env=function_env(description, "ApiFunction"), stdout=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline().strip()
        base = line.removeprefix("listening on ")
        with urllib.request.urlopen(base + "/v1/health", timeout=10) as response:
            return base, response.status, json.loads(response.read())
    finally:
        process.terminate()
        process.wait(timeout=10)


class Receiver(http.server.ThreadingHTTPServer):
    """Webhook receiver on a free loopback port, recording what it is sent."""

    def __init__(self):
        self.received = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.server_address[1]}/{path}"


def verify(secret: bytes, header: str, body: bytes, tolerance: int = 300) -> bool:
    """The README's receiver-side check of X-Spotwise-Signature."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t = int(parts["t"])
    if abs(time.time() - t) > tolerance:
        return False
    expected = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


def endpoint_item(endpoint_id, kind, url):
    return {"pk": f"T#{TENANT}", "sk": f"WEBHOOK#{endpoint_id}", "version": 1, "id": endpoint_id,
            "tenant_id": TENANT, "name": f"local {kind}", "url": url, "secret": WEBHOOK_SECRET, "kind": kind,
            "enabled": True, "min_severity": "info", "event_types": [], "label_selector": {},
            "rate_per_minute": 30, "burst": 10}


def scheduled_report_item():
    """A weekly savings report schedule whose first run is due now."""
    now = time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(time.time() - 60))
    return {"pk": f"T#{TENANT}", "sk": "SCHEDULE#weekly-report", "version": 1,
            "gsi1pk": "DUE_SCHEDULE", "gsi1sk": f"{now}#T#{TENANT}#weekly-report",
            "id": "weekly-report", "tenant_id": TENANT, "cluster_id": CLUSTER, "name": "weekly savings report",
            "kind": "report", "cron": "0 8 * * MON", "time_zone": "Europe/Berlin", "status": "active",
            "consecutive_failures": 0, "pause_after": 3, "next_run_at": now,
            "created_at": now, "updated_at": now}


def pump(bin_dir, description, stack, queue, logical):
    """Does what Lambda's SQS poller does: hands the queue's messages to the function in batches
    and deletes those it did not report as failed. Returns (messages, failures)."""
    handled = failed = 0
    while True:
        out = stack.sqs.receive_message(QueueUrl=stack.refs[queue], MaxNumberOfMessages=10,
                                        MessageSystemAttributeNames=["All"])
        messages = out.get("Messages", [])
        if not messages:
            return handled, failed
        event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                              "attributes": m.get("Attributes", {}), "messageAttributes": {}, "eventSource": "aws:sqs",
                              "md5OfBody": m["MD5OfBody"], "awsRegion": description["region"],
                              "eventSourceARN": local_stack.queue_arn(stack.refs[queue], description["region"])}
                             for m in messages]}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(event, f)
        try:
            result, _ = invoke(bin_dir, description, logical, f.name)
        finally:
            os.unlink(f.name)
        failures = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        for m in messages:
            if m["MessageId"] not in failures:
                stack.sqs.delete_message(QueueUrl=stack.refs[queue], ReceiptHandle=m["ReceiptHandle"])
        handled += len(messages)
        failed += len(failures)
        if failures:
            return handled, failed


def scraped_since(stack, runs):
    """The last `runs` scrape run records: pools seen and written."""
    out = stack.ddb.query(TableName=stack.names["Table"], KeyConditionExpression="pk = :pk",
                          ExpressionAttributeValues={":pk": {"S": "SCRAPE"}}, ScanIndexForward=False, Limit=runs)
    items = out.get("Items", [])
    pools = sum(int(i["pools"]["N"]) for i in items)
    written = sum(int(i["written"]["N"]) for i in items)
    return f"{pools} pools, {written} written (unchanged within tolerance are not rewritten)"


def summarize(result):
    if isinstance(result, dict) and "regions" in result and "enqueued" in result:
        return f"{result['enqueued']} region message(s) queued"
    if isinstance(result, dict) and "batchItemFailures" in result:
        failures = result["batchItemFailures"]
        return "batch ok" if not failures else f"{len(failures)} message(s) failed"
    if isinstance(result, dict) and "runs_started" in result:
        sleeps = result["hibernation"]
        return (f"{result['runs_started']} scheduled run(s) started, {len(sleeps['slept'])} cluster(s) put to sleep, "
                f"{len(sleeps['woke'])} woken, {len(result['failures']) + len(sleeps['failures'])} failure(s)")
    if isinstance(result, dict) and "statusCode" in result:
        return f"HTTP {result['statusCode']} {json.dumps(result['body'])}"
    text = json.dumps(result)
    return text if len(text) < 110 else text[:107] + "..."


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "debug"))
    args = parser.parse_args()

    server, stack, seeded = local_stack.start_seeded(ROOT, {"ScrapeRegions": "us-east-1,us-east-2,eu-west-1"})
    try:
        template = stack.template
        receiver = Receiver()
        serializer = boto3.dynamodb.types.TypeSerializer()
        for item in (endpoint_item("wh-generic", "generic", receiver.url("generic")),
                     endpoint_item("wh-slack", "slack", receiver.url("slack")),
                     scheduled_report_item()):
            stack.ddb.put_item(TableName=stack.names["Table"], Item={k: serializer.serialize(v) for k, v in item.items()})
        description = stack.describe()
        print(f"local stack on {description['endpoint']}: table {stack.names['Table']}, "
              f"{sum(1 for r in template['Resources'].values() if r['Type'] == 'AWS::SQS::Queue')} queues, "
              f"{seeded} seed items\n")

        snapshot = subprocess.run(
            [os.path.join(args.bin_dir, "optimizer"), "put-snapshot", "--tenant", TENANT, "--cluster", CLUSTER,
             "--file", "events/optimizer/kubectl-snapshot.json"],
            cwd=ROOT, env=function_env(description, "OptimizerFunction"), capture_output=True, text=True,
            timeout=120, check=True,
        )
        uploaded = json.loads(snapshot.stdout)
        print(f"cluster snapshot stored (as the agent uploads it): {uploaded['nodes']} nodes, "
              f"{uploaded['pods']} pods, from events/optimizer/kubectl-snapshot.json\n")

        print(f"{'function':<27} {'event':<56} {'ms':>6}  result")
        for logical, event in STEPS:
            if event.startswith("queue:"):
                queue = event.removeprefix("queue:")
                handled, failed = pump(args.bin_dir, description, stack, queue, logical)
                print(f"{logical:<27} {'(' + queue + ')':<56} {'':>6}  {handled} message(s), {failed} failed; "
                      f"{scraped_since(stack, handled)}")
                continue
            delivered = sample_event(description, logical, event)
            try:
                result, ms = invoke(args.bin_dir, description, logical, delivered)
            finally:
                if delivered != event:
                    os.unlink(delivered)
            print(f"{logical:<27} {event:<56} {ms:>6.0f}  {summarize(result)}")

        notified = pump(args.bin_dir, description, stack, "NotificationsQueue", "WebhookDispatcherFunction")
        delivered = pump(args.bin_dir, description, stack, "DeliveriesQueue", "WebhookDispatcherFunction")
        print(f"{'WebhookDispatcherFunction':<27} {'(notifications queue, then deliveries queue)':<56} {'':>6}  "
              f"{notified[0]} notifications routed, {delivered[0]} deliveries made, {notified[1] + delivered[1]} failed")

        base, status, body = serve_api(args.bin_dir, description)
        print(f"{'ApiFunction (serve)':<27} {'GET ' + base + '/v1/health':<56} {'':>6}  HTTP {status} {json.dumps(body)}")

        ddb = boto3.client("dynamodb", endpoint_url=description["endpoint"], region_name=description["region"],
                           aws_access_key_id="local", aws_secret_access_key="local")
        table = stack.names["Table"]
        plain = TypeDeserializer()

        def count(pk, prefix):
            out = ddb.query(TableName=table, KeyConditionExpression="pk = :p AND begins_with(sk, :s)",
                            ExpressionAttributeValues={":p": {"S": pk}, ":s": {"S": prefix}})
            return [{k: plain.deserialize(v) for k, v in item.items()} for item in out["Items"]]

        actions = count("T#t1", "ACTION#")
        recommendations = count("T#t1", f"REC#{CLUSTER}#")
        notifications = count("T#t1", "NOTIFICATION#")
        queued = stack.sqs.get_queue_attributes(QueueUrl=stack.refs["DiscoveryQueue"],
                                                AttributeNames=["ApproximateNumberOfMessages"])
        print("\nstate after the run:")
        print(f"  discovery messages queued:   {queued['Attributes']['ApproximateNumberOfMessages']}")
        if recommendations:
            latest = recommendations[-1]
            summary = latest["summary"]
            mix = ", ".join(f"{m['nodes']}x {m['instance_type']} {m['capacity_type']} ({m['zone']})"
                            for m in latest["node_mix"])
            print(f"  recommendation r{latest['revision']} ({latest['status']}): ${float(summary['current_monthly_cost']):.2f}"
                  f" -> ${float(summary['monthly_cost']):.2f}/month, {int(summary['spot_nodes'])} of "
                  f"{int(summary['nodes'])} nodes spot, risk {float(summary['risk_score']):.0f}/100")
            print(f"    node mix: {mix}")
            steps = latest.get("consolidation") or {}
            for step in steps.get("steps", [])[:5]:
                print(f"    {step['kind']} {step['node']}: {step['reason']}")
        hour = count("T#t1", f"COST#{CLUSTER}#H#summary#")
        namespaces = count("T#t1", f"COST#{CLUSTER}#H#namespace#")
        reports = count("T#t1", f"SAVINGSREPORT#{CLUSTER}#")
        if hour and namespaces:
            total = hour[-1]["summary"]["total"]
            lines = sorted(namespaces[-1]["table"]["lines"].items(), key=lambda kv: -float(kv[1]["cost"]))
            split = ", ".join(f"{name} ${float(line['cost']):.4f}" for name, line in lines)
            print(f"  cost of hour {hour[-1]['period']}:      ${float(total['cost']):.4f} "
                  f"(idle ${float(total['idle']):.4f}, on-demand equivalent ${float(total['on_demand']):.4f}): {split}")
        for report in reports:
            print(f"  savings report {report['month']}:   {report['cost']} spent, {report['realised_total']} saved "
                  f"({report['hours_covered']} of {report['hours_in_month']} hours sampled); "
                  f"top opportunity: {report['opportunities'][0]['title'] if report['opportunities'] else 'none'}")
        agent_queue = stack.sqs.get_queue_attributes(QueueUrl=stack.refs["spotwise-local-agent-c1.fifo"],
                                                     AttributeNames=["ApproximateNumberOfMessages"])
        stats = count("STATS#interruption", "DAY#")
        print(f"  agent actions issued:        {len(actions)} "
              f"({agent_queue['Attributes']['ApproximateNumberOfMessages']} signed on the cluster's agent queue)")
        for record in actions:
            action = record["action"]
            spec = action["spec"]
            print(f"    {spec['kind']} {spec['node']} ({record['instance_id']}): {record['status']}, "
                  f"deadline {action['not_after']} — {action['reason']}")
        if stats:
            counters = {k: int(v) for k, v in stats[0].items() if k not in ("pk", "sk", "ttl")}
            print(f"  interruption counters today: {counters}")
        print(f"  notifications in feed:       {len(notifications)}")
        signed = [(headers, body) for path, headers, body in receiver.received if path == "/generic"]
        verified = sum(verify(WEBHOOK_SECRET.encode(), h.get("x-spotwise-signature", ""), b) for h, b in signed)
        print(f"  webhooks received locally:   {len(receiver.received)} on {receiver.url('')} "
              f"({len(signed)} generic, {verified} with a valid signature)")
        for path, headers, body in receiver.received[:4]:
            title = json.loads(body).get("title") or json.loads(body).get("text", "")
            print(f"    {path}: {title[:90]}")
        receiver.shutdown()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
