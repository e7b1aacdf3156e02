#!/usr/bin/env python3
"""The local run: starts the local AWS stack from template.yaml, seeds a tenant, and invokes every
Spotwise function binary on its sample event from events/, printing what each did.

Run through scripts/run-local.sh, which builds the binaries first.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

import boto3
from boto3.dynamodb.types import TypeDeserializer
from moto.server import ThreadedMotoServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as local_stack  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TENANT = "t1"
CLUSTER = "111122223333.us-east-1.prod-us-east-1"

STEPS = [
    ("DiscoveryFunction", "events/discovery/schedule.json"),
    ("PricingScraperFunction", "events/pricing-scraper/schedule.json"),
    ("PricingScraperFunction", "events/pricing-scraper/schedule.json"),
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
    })
    env.pop("AWS_LAMBDA_RUNTIME_API", None)
    return env


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


def summarize(result):
    if isinstance(result, dict) and "written" in result and "pools" in result:
        failed = [r["region"] for r in result["regions"] if r.get("error")]
        return (f"{result['pools']} pools in {len(result['regions'])} regions, {result['written']} written "
                f"(unchanged pools are not rewritten){', failed: ' + ', '.join(failed) if failed else ''}")
    if isinstance(result, dict) and "batchItemFailures" in result:
        failures = result["batchItemFailures"]
        return "batch ok" if not failures else f"{len(failures)} message(s) failed"
    if isinstance(result, dict) and "statusCode" in result:
        return f"HTTP {result['statusCode']} {json.dumps(result['body'])}"
    text = json.dumps(result)
    return text if len(text) < 110 else text[:107] + "..."


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "debug"))
    args = parser.parse_args()

    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        template = local_stack.load_template(os.path.join(ROOT, "template.yaml"))
        stack = local_stack.Stack(template, f"http://{host}:{port}",
                                  {"SpotAdvisorUrl": "data/spot-advisor-data.json",
                                   "SpotPriceSource": "data/spot-prices-spotjs.json",
                                   "OnDemandPriceSource": "data/on-demand-prices.json",
                                   "CatalogueSource": "data/ec2-instance-types.json",
                                   "ScrapeRegions": "us-east-1,us-east-2,eu-west-1"})
        stack.create()
        seeded = stack.seed(os.path.join(ROOT, "events/local/seed.json"))
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
            result, ms = invoke(args.bin_dir, description, logical, event)
            print(f"{logical:<27} {event:<56} {ms:>6.0f}  {summarize(result)}")

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
            print(f"    {action['kind']} {action['target']['name']} ({record['instance_id']}): {record['status']}, "
                  f"deadline {action['not_after']} — {action['reason']}")
        if stats:
            counters = {k: int(v) for k, v in stats[0].items() if k not in ("pk", "sk", "ttl")}
            print(f"  interruption counters today: {counters}")
        print(f"  notifications in feed:       {len(notifications)}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
