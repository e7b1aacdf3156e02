#!/usr/bin/env python3
"""What Spotwise's own AWS bill is per cluster-month, measured.

Runs `spotwise-cost-day`: a simulated day of one cluster of 30 nodes and 400 pods on the local
stack (agent heartbeats every 30 s and snapshots every 5 min through the API, discovery every
5 min, the optimizer and the cost sample hourly, the scheduler every minute, the scraper
hourly), with every AWS request of the functions going through a recording proxy that counts
them by kind and size (DynamoDB request units by DynamoDB's item-size rules). Prices the day at
the published us-east-1 prices below, times 30, with the fixed costs (fan-outs, scheduler ticks,
the scraper, the KMS key, alarms, queue pollers) shared over FLEET clusters.

A few costs the simulated day does not produce are modelled from the code's settings and listed
as such: Lambda's pollers on idle SQS queues, the agent's long polls of its queue, the KMS key,
the DLQ alarms and EventBridge Scheduler invocations.

Usage: cost_model.py [--minutes N] [--bin PATH] [--json FILE]
The last line is always `platform cost: $X.XX per cluster-month`.
"""

import argparse
import datetime
import json
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack as local_stack  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Published us-east-1 prices, USD (checked 2026-12; on-demand, no free tier counted).
PRICE = {
    # DynamoDB on-demand: per write / read request unit, and storage per GB-month.
    "dynamodb_wru": 0.625 / 1e6,
    "dynamodb_rru": 0.125 / 1e6,
    "dynamodb_gb_month": 0.25,
    # S3 Standard: PUT/COPY/POST/LIST per request, GET/HEAD per request, storage per GB-month.
    "s3_put": 0.005 / 1000,
    "s3_get": 0.0004 / 1000,
    "s3_gb_month": 0.023,
    # SQS standard: per request, each 64 KiB of payload a request.
    "sqs_request": 0.40 / 1e6,
    # KMS: per request, and per customer managed key-month.
    "kms_request": 0.03 / 10000,
    "kms_key_month": 1.00,
    # Lambda on arm64: per request and per GB-second.
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second": 0.0000133334,
    # API Gateway HTTP API: per request (first 300 million a month).
    "http_api_request": 1.00 / 1e6,
    # CloudWatch: log ingestion per GB, standard alarm per month.
    "logs_gb": 0.50,
    "alarm_month": 0.10,
    # EventBridge Scheduler: per invocation.
    "scheduler_invocation": 1.00 / 1e6,
}
# Lambda time is the handler's own time as measured, plus the AWS requests it made at AWS's
# latency instead of the local emulator's (moto answers a 2,000-item query in seconds): per
# request, by service, plus the bytes at in-region throughput. DynamoDB: "single-digit
# milliseconds"; the others are typical in-region round trips.
LATENCY_MS = {"dynamodb": 6, "sqs": 15, "s3": 30, "kms": 10, "sts": 50, "ec2": 80, "eks": 80, "pricing": 100}
THROUGHPUT_BYTES_PER_MS = 50 * 1024 * 1024 / 1000

# STS, EC2 and EKS describe calls, and the Pricing API, cost nothing (EC2/EKS calls are made
# in the customer's account through its role).
FREE_SERVICES = {"sts", "ec2", "eks", "pricing"}

FLEET = 100
DAYS = 30
MONTH_MINUTES = DAYS * 24 * 60
# Lambda's SQS event source long-polls each queue with five pollers, 20 s per receive.
POLLERS_PER_QUEUE = 5
LONG_POLL_SECONDS = 20
# An API instance caches a key's record this long (template: API_KEY_CACHE_SECONDS). The
# simulated day passes in minutes of wall time, so its cache hides most of the day's reads.
KEY_CACHE_SECONDS = 60


def gb(n):
    return n / 1024 ** 3


def price_call(name, usage):
    """USD for one kind of request over the simulated span."""
    service, _, operation = name.partition(":")
    if service in FREE_SERVICES:
        return 0.0
    if service == "dynamodb":
        return usage["write_units"] * PRICE["dynamodb_wru"] + usage["read_units"] * PRICE["dynamodb_rru"]
    if service == "s3":
        if operation in ("GetObject", "HeadObject"):
            return usage["count"] * PRICE["s3_get"]
        if operation == "DeleteObject":
            return 0.0
        return usage["count"] * PRICE["s3_put"]
    if service == "sqs":
        chunks = max(usage["count"], math.ceil((usage["request_bytes"] + usage["response_bytes"]) / 65536))
        return chunks * PRICE["sqs_request"]
    if service == "kms":
        return usage["count"] * PRICE["kms_request"]
    raise ValueError(f"no price for {name}")


def memory_mb(template):
    default = template.get("Globals", {}).get("Function", {}).get("MemorySize", 128)
    return {name: r.get("Properties", {}).get("MemorySize", default)
            for name, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}


def month_of_phase(phase, scale, memory):
    """USD per month of one phase, by line: requests, Lambda, API Gateway, logs."""
    lines = {}
    for name, usage in phase["calls"].items():
        service = name.partition(":")[0]
        lines[service] = lines.get(service, 0.0) + price_call(name, usage) * scale
    if phase["function"]:
        mb = memory.get(phase["function"], 128)
        own_ms = max(0.0, phase["lambda_ms"] - phase["aws_ms"])
        aws_ms = sum(usage["count"] * LATENCY_MS.get(name.partition(":")[0], 50)
                     + (usage["request_bytes"] + usage["response_bytes"]) / THROUGHPUT_BYTES_PER_MS
                     for name, usage in phase["calls"].items())
        lambda_usd = (phase["invocations"] * PRICE["lambda_request"]
                      + (own_ms + aws_ms) / 1000 * mb / 1024 * PRICE["lambda_gb_second"])
        lines["lambda"] = lambda_usd * scale
    lines["api gateway"] = phase["api_requests"] * PRICE["http_api_request"] * scale
    lines["logs"] = gb(phase["log_bytes"]) * PRICE["logs_gb"] * scale
    return {k: v for k, v in lines.items() if v > 0}


# Real spot price changes (m5.large, six zones of us-east-1, a month of 2021) give how often a
# pool moves beyond the scraper's tolerance; the simulated day's feeds are files that never change.
PRICE_HISTORY = "shared/core/tests/data/describe-spot-price-history-m5.large-us-east-1.json"
POOL_PRICE_TOLERANCE = 0.005  # shared/core/src/domain.rs


def pool_rewrites_per_day():
    """Rewrites of one pool a day: price changes beyond the tolerance of the last written price."""
    with open(os.path.join(ROOT, PRICE_HISTORY)) as f:
        history = json.load(f)["SpotPriceHistory"]
    by_zone = {}
    for point in history:
        if point["ProductDescription"].startswith("Linux"):
            by_zone.setdefault(point["AvailabilityZone"], []).append((point["Timestamp"], float(point["SpotPrice"])))
    writes = days = 0.0
    for points in by_zone.values():
        points.sort()
        written = points[0][1]
        for _, price in points[1:]:
            if abs(price - written) / max(price, written) >= POOL_PRICE_TOLERANCE:
                writes += 1
                written = price
        first, last = (datetime.datetime.fromisoformat(points[i][0]) for i in (0, -1))
        days += (last - first).total_seconds() / 86400
    return writes / days


def modelled(template, day):
    """Monthly costs the simulated day does not make, from the template's and the agent's
    settings: (label, USD per month, fixed)."""
    resources = template["Resources"].values()
    sqs_triggers = sum(1 for r in resources if r["Type"] == "AWS::Serverless::Function"
                       for e in r.get("Properties", {}).get("Events", {}).values() if e.get("Type") == "SQS")
    schedules = [e["Properties"]["ScheduleExpression"] for r in resources if r["Type"] == "AWS::Serverless::Function"
                 for e in r.get("Properties", {}).get("Events", {}).values() if e.get("Type") == "ScheduleV2"]

    def per_month(expression):
        if expression.startswith("rate("):
            amount, unit = expression[5:-1].split()
            minutes = {"minute": 1, "minutes": 1, "hour": 60, "hours": 60, "day": 1440, "days": 1440}[unit]
            return MONTH_MINUTES / (int(amount) * minutes)
        _minute, hour, day_of_month = expression[5:-1].split()[:3]
        if hour == "*":
            return DAYS * 24
        return DAYS if day_of_month == "*" else 1
    polls = MONTH_MINUTES * 60 / LONG_POLL_SECONDS
    regions = len(template["Parameters"]["ScrapeRegions"]["Default"].split(","))
    rewrites = pool_rewrites_per_day()
    kms_keys = sum(1 for r in resources if r["Type"] == "AWS::KMS::Key")
    alarms = sum(1 for r in resources if r["Type"] == "AWS::CloudWatch::Alarm")
    return [
        (f"Lambda pollers on {sqs_triggers} SQS triggers ({POLLERS_PER_QUEUE} x 20 s long polls each)",
         sqs_triggers * POLLERS_PER_QUEUE * polls * PRICE["sqs_request"], True),
        ("agent long polls of its cluster queue (20 s waits)", polls * PRICE["sqs_request"], False),
        (f"agent key reads (one per API instance per {KEY_CACHE_SECONDS} s)",
         MONTH_MINUTES * 60 / KEY_CACHE_SECONDS * PRICE["dynamodb_rru"], False),
        (f"pool rewrites: {day['pools']} pools x {regions} regions x {rewrites:.2f} a day beyond tolerance "
         f"(item and index, 1 KB each)",
         day["pools"] * regions * rewrites * DAYS * 2 * PRICE["dynamodb_wru"], True),
        (f"{kms_keys} KMS key(s)", kms_keys * PRICE["kms_key_month"], True),
        (f"{alarms} CloudWatch alarms", alarms * PRICE["alarm_month"], True),
        (f"EventBridge Scheduler ({len(schedules)} schedules)",
         sum(per_month(s) for s in schedules) * PRICE["scheduler_invocation"], True),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=1440, help="simulated minutes (the result is scaled to a day)")
    parser.add_argument("--bin", default=None, help="a built spotwise-cost-day (default: cargo build --release)")
    parser.add_argument("--json", default=None, help="price a recorded day instead of running one")
    args = parser.parse_args()

    if args.json:
        with open(args.json) as f:
            day = json.load(f)
    else:
        binary = args.bin
        if binary is None:
            subprocess.run(["cargo", "build", "--release", "-p", "spotwise-flow", "--bin", "spotwise-cost-day"],
                           cwd=ROOT, check=True)
            binary = os.path.join(ROOT, "target", "release", "spotwise-cost-day")
        out = subprocess.run([binary, "--minutes", str(args.minutes)], cwd=ROOT, check=True,
                             capture_output=True, text=True)
        day = json.loads(out.stdout)

    template = local_stack.load_template(os.path.join(ROOT, "template.yaml"))
    memory = memory_mb(template)
    scale_to_month = (1440 / day["minutes"]) * DAYS
    regions = len(template["Parameters"]["ScrapeRegions"]["Default"].split(","))
    scraped = len(day["scrape_regions"])

    rows = []
    for name, phase in sorted(day["phases"].items()):
        if name in ("setup", "done", "storage scan"):
            continue
        scale = scale_to_month
        if name == "shared: scraper":
            # The day scraped fewer regions than the template's default list.
            scale *= regions / scraped
        lines = month_of_phase(phase, scale, memory)
        share = 1 / FLEET if phase["fixed"] else 1
        rows.append((name, phase["fixed"], {k: v * share for k, v in lines.items()}))

    storage = day["phases"].get("storage scan", {}).get("calls", {}).get("dynamodb:Scan", {})
    table_bytes = storage.get("item_bytes", 0.0)
    snapshot_bytes = 2 * day["snapshot_gzip_bytes"]
    # What the table holds at the end of the day (pools included), and the two snapshot objects.
    storage_usd = gb(table_bytes) * PRICE["dynamodb_gb_month"] + gb(snapshot_bytes) * PRICE["s3_gb_month"]

    services = sorted({k for _, _, lines in rows for k in lines})
    print(f"Simulated {day['minutes']} minutes of one cluster ({day['nodes']} nodes, {day['pods']} pods; "
          f"snapshot {day['snapshot_gzip_bytes'] / 1024:.0f} KiB gzip); USD per cluster-month, "
          f"fixed costs over {FLEET} clusters\n")
    header = f"{'phase':<34}" + "".join(f"{s:>12}" for s in services) + f"{'total':>10}"
    print(header)
    total = 0.0
    for name, fixed, lines in rows:
        subtotal = sum(lines.values())
        total += subtotal
        print(f"{name + (' /' + str(FLEET) if fixed else ''):<34}"
              + "".join(f"{lines.get(s, 0.0):>12.4f}" for s in services) + f"{subtotal:>10.4f}")
    print()
    for label, usd, fixed in modelled(template, day):
        share = usd / FLEET if fixed else usd
        total += share
        print(f"modelled: {label}{' /' + str(FLEET) if fixed else ''}: {share:.4f}")
    total += storage_usd
    print(f"storage: the table at the end of the day ({table_bytes / 1024:.0f} KiB) "
          f"and two snapshot objects: {storage_usd:.4f}")
    print(f"\nplatform cost: ${total:.2f} per cluster-month")


if __name__ == "__main__":
    main()
