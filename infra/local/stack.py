#!/usr/bin/env python3
"""Local AWS stack for Spotwise: moto_server on a free loopback port, bootstrapped from template.yaml.

The DynamoDB tables and SQS queues (with their redrive policies) are created from the template's
resource properties, and each function's environment is resolved from the template's Globals and
function Environment, so the local stack cannot drift from what `sam deploy` creates.

    stack.py serve [--out FILE] [--seed FILE]
        start, print one JSON line describing the stack, run until standard input closes or
        SIGINT/SIGTERM arrives
    stack.py check
        static checks of template.yaml that cfn-lint does not make (see check_template)
"""

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading

from decimal import Decimal

import boto3
import yaml
from moto.server import ThreadedMotoServer

# Authenticator codes are checked against the secret the pool hands out, as in AWS; without
# this moto accepts any six digits.
os.environ.setdefault("MOTO_COGNITO_IDP_USER_POOL_ENABLE_TOTP", "true")

REGION = "us-east-1"
STACK = "spotwise-local"
STAGE = "local"


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !GetAtt, !Sub ...) as their long form."""


def _tag(name):
    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    return construct


for _short in ["Ref", "GetAtt", "Sub", "Join", "Select", "Split", "If", "Equals", "Not", "And",
               "Or", "FindInMap", "ImportValue", "Base64", "GetAZs", "Condition"]:
    CfnLoader.add_constructor("!" + _short, _tag(_short if _short in ("Ref", "Condition") else "Fn::" + _short))


def load_template(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)


class Stack:
    def __init__(self, template, endpoint, parameters):
        self.template = template
        self.resources = template.get("Resources", {})
        self.endpoint = endpoint
        session = boto3.session.Session(
            aws_access_key_id="local", aws_secret_access_key="local", region_name=REGION
        )
        self.ddb = session.client("dynamodb", endpoint_url=endpoint)
        self.sqs = session.client("sqs", endpoint_url=endpoint)
        self.kms = session.client("kms", endpoint_url=endpoint)
        self.s3 = session.client("s3", endpoint_url=endpoint)
        self.events = session.client("events", endpoint_url=endpoint)
        self.cognito = session.client("cognito-idp", endpoint_url=endpoint)
        self.refs = {"AWS::Region": REGION, "AWS::AccountId": "123456789012", "AWS::URLSuffix": "amazonaws.com"}
        self.arns = {}
        self.names = {}
        for name, spec in template.get("Parameters", {}).items():
            value = parameters.get(name, STAGE if name == "Stage" else spec.get("Default"))
            if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
                value = value.split(",")
            self.refs[name] = value

    def of_type(self, kind):
        return [(name, r.get("Properties", {})) for name, r in self.resources.items() if r["Type"] == kind]

    def create(self):
        for logical, props in self.of_type("AWS::DynamoDB::Table"):
            name = props.get("TableName", f"{STACK}-{logical}")
            args = {k: props[k] for k in ("AttributeDefinitions", "KeySchema", "BillingMode") if k in props}
            if props.get("GlobalSecondaryIndexes"):
                args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
            self.ddb.create_table(TableName=name, **args)
            ttl = props.get("TimeToLiveSpecification")
            if ttl and ttl.get("Enabled"):
                self.ddb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
                )
            self.refs[logical] = name
            self.names[logical] = name
            self.arns[logical] = f"arn:aws:dynamodb:{REGION}:123456789012:table/{name}"
        for logical, props in self.of_type("AWS::Cognito::UserPool"):
            args = {k: props[k] for k in ("UsernameAttributes", "AutoVerifiedAttributes", "AdminCreateUserConfig",
                                          "MfaConfiguration", "Policies") if k in props}
            schema = [{**attribute, "StringAttributeConstraints": attribute.get("StringAttributeConstraints", {})}
                      for attribute in props.get("Schema", [])]
            pool = self.cognito.create_user_pool(PoolName=f"{STACK}-{logical}", Schema=schema, **args)["UserPool"]
            self.refs[logical] = pool["Id"]
            self.names[logical] = pool["Id"]
            self.arns[logical] = pool["Arn"]
        for logical, props in self.of_type("AWS::Cognito::UserPoolClient"):
            args = {k: props[k] for k in ("ExplicitAuthFlows", "ReadAttributes", "WriteAttributes") if k in props}
            client = self.cognito.create_user_pool_client(
                UserPoolId=self.resolve(props["UserPoolId"]), ClientName=props["ClientName"], GenerateSecret=False, **args
            )["UserPoolClient"]
            self.refs[logical] = client["ClientId"]
            self.names[logical] = client["ClientId"]
        for logical, props in self.of_type("AWS::Cognito::UserPoolGroup"):
            self.cognito.create_group(UserPoolId=self.resolve(props["UserPoolId"]), GroupName=props["GroupName"],
                                      Description=props.get("Description", ""), Precedence=props.get("Precedence", 0))
        for logical, props in self.of_type("AWS::S3::Bucket"):
            name = f"{STACK}-{logical}".lower()
            self.s3.create_bucket(Bucket=name)
            self.refs[logical] = name
            self.names[logical] = name
            self.arns[logical] = f"arn:aws:s3:::{name}"
        for logical, props in self.of_type("AWS::KMS::Key"):
            key = self.kms.create_key(Description=str(props.get("Description", logical)))["KeyMetadata"]
            self.refs[logical] = key["KeyId"]
            self.names[logical] = key["KeyId"]
            self.arns[logical] = key["Arn"]
        queues = self.of_type("AWS::SQS::Queue")
        # Create every queue first, then attach redrive policies that point at DLQ ARNs.
        for logical, props in queues:
            fifo = bool(props.get("FifoQueue"))
            name = props.get("QueueName", f"{STACK}-{logical}" + (".fifo" if fifo else ""))
            attributes = {
                key: str(props[key]).lower() if isinstance(props[key], bool) else str(props[key])
                for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds",
                            "ReceiveMessageWaitTimeSeconds", "FifoQueue", "ContentBasedDeduplication")
                if key in props
            }
            url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            self.refs[logical] = url
            self.names[logical] = name
            self.arns[logical] = arn
        for logical, props in queues:
            redrive = props.get("RedrivePolicy")
            if redrive:
                policy = {
                    "deadLetterTargetArn": self.resolve(redrive["deadLetterTargetArn"]),
                    "maxReceiveCount": int(redrive["maxReceiveCount"]),
                }
                self.sqs.set_queue_attributes(
                    QueueUrl=self.refs[logical], Attributes={"RedrivePolicy": json.dumps(policy)}
                )

        # The interruption bus and its rules, delivering to the queues just created.
        for logical, props in self.of_type("AWS::Events::EventBus"):
            name = self.resolve(props["Name"])
            self.arns[logical] = self.events.create_event_bus(Name=name)["EventBusArn"]
            self.refs[logical] = name
            self.names[logical] = name
        for logical, props in self.of_type("AWS::Events::Rule"):
            if "EventPattern" not in props:
                continue
            bus = self.resolve(props.get("EventBusName", "default"))
            rule = f"{STACK}-{logical}"
            self.events.put_rule(Name=rule, EventBusName=bus, EventPattern=json.dumps(props["EventPattern"]))
            targets = [{"Id": t["Id"], "Arn": self.resolve(t["Arn"])} for t in props.get("Targets", [])]
            self.events.put_targets(Rule=rule, EventBusName=bus, Targets=targets)

    def seed(self, path):
        """Creates the queues of a seed file and writes its items (store format: pk/sk beside
        document fields). A string item value `{{queue:NAME}}` becomes that queue's URL."""
        with open(path, encoding="utf-8") as f:
            seed = json.load(f, parse_float=Decimal)
        urls = {}
        for queue in seed.get("queues", []):
            attributes = {"FifoQueue": "true"} if queue["name"].endswith(".fifo") else {}
            urls[queue["name"]] = self.sqs.create_queue(QueueName=queue["name"], Attributes=attributes)["QueueUrl"]
            self.refs[queue["name"]] = urls[queue["name"]]
            self.names[queue["name"]] = queue["name"]

        def fill(value):
            if isinstance(value, str) and value.startswith("{{queue:") and value.endswith("}}"):
                return urls[value[len("{{queue:"):-2]]
            if isinstance(value, dict) and "$seal" in value:
                return self.sealed(**value["$seal"])
            return value

        items = [{k: fill(v) for k, v in item.items()} for item in seed["items"]]
        serializer = boto3.dynamodb.types.TypeSerializer()
        table = next(name for logical, name in self.names.items()
                     if self.resources[logical]["Type"] == "AWS::DynamoDB::Table")
        for item in items:
            self.ddb.put_item(TableName=table, Item={k: serializer.serialize(v) for k, v in item.items()})
        return len(items)

    def sealed(self, purpose, tenant, resource, plaintext_hex):
        """A secret sealed as the functions seal it (spotwise_aws::secrets): a KMS data key bound
        to its purpose, tenant and resource, and AES-256-GCM over the plaintext."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        key_id = next(self.refs[logical] for logical, _ in self.of_type("AWS::KMS::Key"))
        context = {"purpose": purpose, "tenant": tenant, "resource": resource}
        data_key = self.kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=context)
        nonce = os.urandom(12)
        aad = f"{purpose}\n{tenant}\n{resource}".encode()
        ciphertext = AESGCM(data_key["Plaintext"]).encrypt(nonce, bytes.fromhex(plaintext_hex), aad)
        return {"data_key": data_key["CiphertextBlob"].hex(), "nonce": nonce.hex(), "ciphertext": ciphertext.hex()}

    def resolve(self, value):
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and "Ref" in value:
            return self.refs[value["Ref"]]
        if isinstance(value, dict) and "Fn::GetAtt" in value:
            logical, attribute = value["Fn::GetAtt"]
            if attribute == "Arn":
                return self.arns[logical]
            if attribute == "QueueName":
                return self.names[logical]
            raise ValueError(f"unsupported GetAtt {logical}.{attribute}")
        if isinstance(value, dict) and "Fn::Join" in value:
            sep, parts = value["Fn::Join"]
            parts = self.resolve(parts) if isinstance(parts, dict) else parts
            return sep.join(str(self.resolve(p)) for p in parts)
        if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
            def substitute(match):
                name = match.group(1)
                if name.endswith(".Arn"):
                    return self.arns[name[:-4]]
                return str(self.refs[name])
            return re.sub(r"\$\{([A-Za-z0-9:.]+)\}", substitute, value["Fn::Sub"])
        if isinstance(value, (int, float)):
            return str(value)
        raise ValueError(f"cannot resolve {value!r} locally")

    def functions(self):
        globals_env = (self.template.get("Globals", {}).get("Function", {})
                       .get("Environment", {}).get("Variables", {}))
        result = {}
        for logical, props in self.of_type("AWS::Serverless::Function"):
            binary = self.resources[logical].get("Metadata", {}).get("BuildProperties", {}).get("Binary")
            variables = dict(globals_env)
            variables.update(props.get("Environment", {}).get("Variables", {}))
            env = {k: str(self.resolve(v)) for k, v in variables.items()}
            if "COGNITO_USER_POOL_ID" in env:
                # The local stack serves the pool's keys at its own address; tokens still name
                # the AWS issuer.
                env["COGNITO_JWKS_URL"] = f"{self.endpoint}/{env['COGNITO_USER_POOL_ID']}/.well-known/jwks.json"
            result[logical] = {"binary": binary, "env": env}
        return result

    def describe(self):
        return {
            "endpoint": self.endpoint,
            "region": REGION,
            "resources": {k: self.refs[k] for k in self.names},
            "arns": self.arns,
            "functions": self.functions(),
        }


# The shipped real feeds, relative to the repository root (the binaries run there).
LOCAL_FEEDS = {
    "SpotAdvisorUrl": "data/spot-advisor-data.json",
    "SpotPriceSource": "data/spot-prices-spotjs.json",
    "OnDemandPriceSource": "data/on-demand-prices.json",
    "CatalogueSource": "data/ec2-instance-types.json",
}


def queue_arn(queue_url, region):
    """The ARN of a queue from its URL (`…/<account>/<name>`), as Lambda puts it on each SQS
    record (`eventSourceARN`)."""
    account, name = queue_url.rstrip("/").rsplit("/", 2)[-2:]
    return f"arn:aws:sqs:{region}:{account}:{name}"


# Sample SQS events whose function tells its queues apart by `eventSourceARN`, with the
# environment variable of the queue each is delivered from.
SAMPLE_QUEUES = {
    "events/webhook-dispatcher/sqs-notification.json": "NOTIFICATIONS_QUEUE_URL",
}


def sample_event(root, description, logical, event_path):
    """The JSON text of a sample event as `logical` receives it on the local stack: a sample
    from SAMPLE_QUEUES names the local queue in every record's `eventSourceARN`."""
    with open(os.path.join(root, event_path), encoding="utf-8") as f:
        text = f.read()
    queue_variable = SAMPLE_QUEUES.get(event_path)
    if queue_variable is None:
        return text
    event = json.loads(text)
    arn = queue_arn(description["functions"][logical]["env"][queue_variable], description["region"])
    for record in event["Records"]:
        record["eventSourceARN"] = arn
    return json.dumps(event)


def start_seeded(root, parameters):
    """moto on a free loopback port with the stack of template.yaml created on it, reading the
    shipped feeds, and the local seed (events/local/seed.json) written. Returns the server (stop
    it), the stack, and how many seed items were written."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        template = load_template(os.path.join(root, "template.yaml"))
        stack = Stack(template, f"http://{host}:{port}", {**LOCAL_FEEDS, **parameters})
        stack.create()
        seeded = stack.seed(os.path.join(root, "events/local/seed.json"))
    except BaseException:
        server.stop()
        raise
    return server, stack, seeded


def check_template(template):
    """Platform rules: every SQS-triggered function reports partial batch failures, every queue
    that feeds a function has a DLQ, every function has its own log group, and no IAM statement
    allows a wildcard action or a write on every resource (read-only Describe/Get/List calls
    that support no resource-level permissions may use '*')."""
    resources = template.get("Resources", {})
    problems = []
    log_groups = {json.dumps(r.get("Properties", {}).get("LogGroupName")) for r in resources.values()
                  if r["Type"] == "AWS::Logs::LogGroup"}
    for name, r in resources.items():
        if r["Type"] != "AWS::Serverless::Function":
            continue
        props = r.get("Properties", {})
        for event_name, event in props.get("Events", {}).items():
            ep = event.get("Properties", {})
            if event["Type"] == "SQS":
                if "ReportBatchItemFailures" not in ep.get("FunctionResponseTypes", []):
                    problems.append(f"{name}.{event_name}: SQS trigger without ReportBatchItemFailures")
                queue = ep.get("Queue", {}).get("Fn::GetAtt", [None])[0]
                if not resources.get(queue, {}).get("Properties", {}).get("RedrivePolicy"):
                    problems.append(f"{name}.{event_name}: queue {queue} has no DLQ (RedrivePolicy)")
            if event["Type"] in ("Schedule", "ScheduleV2") and not ep.get("DeadLetterConfig"):
                problems.append(f"{name}.{event_name}: schedule without DeadLetterConfig")
        if json.dumps({"Fn::Sub": f"/aws/lambda/${{{name}}}"}) not in log_groups:
            problems.append(f"{name}: no log group with retention")
        for policy in props.get("Policies", []):
            if not isinstance(policy, dict) or "Statement" not in policy:
                problems.append(f"{name}: only inline Statement policies are allowed (got {policy!r})")
                continue
            for statement in policy["Statement"]:
                actions = statement.get("Action", [])
                actions = [actions] if isinstance(actions, str) else actions
                resources_ = statement.get("Resource", [])
                resources_ = [resources_] if not isinstance(resources_, list) else resources_
                if any("*" in a for a in actions):
                    problems.append(f"{name}: wildcard action in {actions}")
                read_only = all(a.split(":", 1)[-1].startswith(("Describe", "Get", "List")) for a in actions)
                if "*" in resources_ and not read_only:
                    problems.append(f"{name}: write action on Resource '*' ({actions})")
    problems += check_dead_letters(resources)
    return problems


def check_forwarding(template, customer_template):
    """The customer's forwarding rule (infra/customer-events.yaml) matches exactly what the
    rules on Spotwise's interruption bus take: its `$or` alternatives are their patterns."""
    ours = sorted(json.dumps(r["Properties"]["EventPattern"], sort_keys=True)
                  for r in template.get("Resources", {}).values()
                  if r["Type"] == "AWS::Events::Rule" and "EventBusName" in r.get("Properties", {}))
    theirs = [r["Properties"]["EventPattern"] for r in customer_template.get("Resources", {}).values()
              if r["Type"] == "AWS::Events::Rule"]
    if len(theirs) != 1:
        return [f"infra/customer-events.yaml: expected one forwarding rule, found {len(theirs)}"]
    alternatives = sorted(json.dumps(p, sort_keys=True) for p in theirs[0].get("$or", []))
    if alternatives != ours:
        return ["infra/customer-events.yaml: the forwarding rule's $or alternatives differ from "
                "the interruption bus rules in template.yaml"]
    return []


def check_dead_letters(resources):
    """Every function invoked asynchronously (a schedule or a queue) has somewhere its failures
    go, and every dead-letter queue has an alarm. Functions behind the HTTP API answer their
    caller and need neither."""
    problems = []
    dead_letters = set()
    for r in resources.values():
        redrive = r.get("Properties", {}).get("RedrivePolicy", {})
        if redrive:
            dead_letters.add(redrive["deadLetterTargetArn"]["Fn::GetAtt"][0])
    for name, r in resources.items():
        if r["Type"] != "AWS::Serverless::Function":
            continue
        events = r.get("Properties", {}).get("Events", {})
        kinds = {e["Type"] for e in events.values()}
        if not kinds:
            problems.append(f"{name}: no trigger")
        for event_name, event in events.items():
            ep = event.get("Properties", {})
            if event["Type"] in ("Schedule", "ScheduleV2"):
                target = ep.get("DeadLetterConfig", {}).get("Arn", {}).get("Fn::GetAtt", [None])[0]
                if target:
                    dead_letters.add(target)
            elif event["Type"] == "SQS":
                continue
            elif event["Type"] != "HttpApi" and not r["Properties"].get("EventInvokeConfig", {}).get("DestinationConfig"):
                problems.append(f"{name}.{event_name}: {event['Type']} trigger without an on-failure destination")
    alarmed = {
        d.get("Value", {}).get("Fn::GetAtt", [None])[0]
        for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"
        for d in r.get("Properties", {}).get("Dimensions", []) if d.get("Name") == "QueueName"
    }
    for queue in sorted(dead_letters - alarmed):
        problems.append(f"{queue}: dead-letter queue without a depth alarm")
    return problems


def serve(args):
    template = load_template(args.template)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    parameters = dict(p.split("=", 1) for p in args.param)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    stack = Stack(template, f"http://{host}:{port}", parameters)
    stack.create()
    if args.seed:
        stack.seed(args.seed)
    description = json.dumps(stack.describe())
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(description + "\n")
    print(description, flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if not args.no_stdin:
        # The parent holds our stdin; when it exits for any reason the pipe closes and we stop,
        # so a crashed test run never leaves an emulator behind.
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    server.stop()
    if args.out and os.path.exists(args.out):
        os.remove(args.out)


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="start the local stack")
    p.add_argument("--template", default=os.path.join(root, "template.yaml"))
    p.add_argument("--out", help="also write the stack description to this file (removed on stop)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a template parameter (e.g. SpotAdvisorUrl=data/spot-advisor-data.json)")
    p.add_argument("--seed", help="write the items of this seed file (events/local/seed.json)")
    p.add_argument("--no-stdin", action="store_true", help="do not stop when standard input closes")
    c = sub.add_parser("check", help="check template.yaml for what cfn-lint does not")
    c.add_argument("--template", default=os.path.join(root, "template.yaml"))
    c.add_argument("--customer-events", default=os.path.join(root, "infra", "customer-events.yaml"))
    args = parser.parse_args()
    if args.command == "serve":
        serve(args)
    else:
        template = load_template(args.template)
        problems = check_template(template)
        problems += check_forwarding(template, load_template(args.customer_events))
        for problem in problems:
            print(f"template.yaml: {problem}", file=sys.stderr)
        sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
