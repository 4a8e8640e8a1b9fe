"""Tests of charts/meetbot, on the objects the real Helm engine renders.

Run by tests/helm_chart.rs (cargo nextest) with the deployment tools venv that
scripts/test creates: PyPI helm-python-sdk (the Helm v4 engine as a library),
kubernetes-validate (the Kubernetes JSON schemas) and jsonschema. MEETBOT_BIN is the
meetbot binary, which checks the rendered configuration the pods would load.

Every assertion is made on rendered, parsed objects, never on template text.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import subprocess
import tempfile
import unittest
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "meetbot"
CRDS = Path(__file__).resolve().parent / "crds"
# The Kubernetes versions the chart supports: its kubeVersion floor and the newest schemas.
KUBE_VERSIONS = ["1.29.0", "1.37.0"]
METADATA_ADDRESSES = ["169.254.169.254", "168.63.129.16", "fd00:ec2::254"]
# Measured peak RSS of a worker in a meeting (README "Measured"): embedded Whisper tiny.en,
# and with a remote STT.
WORKER_RSS_MIB = {"embedded": 211, "remote": 21}

helm.disable_logging()


def load_values(name: str) -> dict:
    return yaml.safe_load((CHART / "ci" / name).read_text())


def merged(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = v
    return out


class Render:
    """One rendering of the chart: its objects, indexed."""

    def __init__(self, values: dict, name: str = "mb", namespace: str = "meetbot"):
        self.values = values
        with helm.Chart.load(CHART) as chart:
            chart.validate_schema(values)
            self.manifests = chart.render(values, name=name, namespace=namespace, is_install=True)
        self.objects = []
        for path, text in sorted(self.manifests.items()):
            if path.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.objects.append(doc)

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, component: str | None = None) -> dict:
        found = [
            o
            for o in self.of_kind(kind)
            if component is None
            or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {kind} {component}, found {len(found)}"
        return found[0]

    def named(self, kind: str, name: str) -> dict:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"no {kind} named {name}"
        return found[0]

    def pod_templates(self) -> list[tuple[str, dict]]:
        """(owner, pod template) for every workload, custom resources included."""
        out = []
        for o in self.objects:
            kind, spec = o["kind"], o.get("spec", {})
            tpl = None
            if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                tpl = spec["template"]
            elif kind == "CronJob":
                tpl = spec["jobTemplate"]["spec"]["template"]
            elif kind == "ScaledJob":
                tpl = spec["jobTargetRef"]["template"]
            elif kind == "Pod":
                tpl = {"metadata": o["metadata"], "spec": spec}
            if tpl is not None:
                out.append((f"{kind}/{o['metadata']['name']}", tpl))
        return out

    def config_toml(self) -> str:
        return self.one("ConfigMap")["data"]["meetbot.toml"]


def image_env() -> dict:
    """The ENV of the Dockerfile's final stage: the container starts with it, and the pod
    spec's env is applied over it."""
    stages = re.split(r"(?im)^FROM\s", (ROOT / "Dockerfile").read_text())
    text = re.sub(r"\\\n", " ", stages[-1])
    env = {}
    for line in text.splitlines():
        m = re.match(r"\s*ENV\s+(.*)", line)
        if m:
            for k, v in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", m.group(1)):
                env[k] = v.strip('"')
    assert env, "no ENV in the Dockerfile's final stage"
    return env


def run_meetbot(render: Render, container: dict, args: list[str], without: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Runs the meetbot binary with the rendered ConfigMap and the container's environment
    (secrets stubbed; the variables named in `without` left out)."""
    binary = os.environ.get("MEETBOT_BIN")
    if not binary:
        raise AssertionError("set MEETBOT_BIN to the meetbot binary (tests/helm_chart.rs does)")
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "meetbot.toml"
        cfg.write_text(render.config_toml())
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **image_env()}
        for e in container.get("env", []):
            if e["name"] in without:
                continue
            if e["name"] == "MEETBOT_CONFIG":
                env[e["name"]] = str(cfg)  # the mounted ConfigMap
            elif "value" in e:
                env[e["name"]] = e["value"]
            else:
                env[e["name"]] = "stub-secret-value"
        assert "MEETBOT_CONFIG" in env, f"{container['name']}: no MEETBOT_CONFIG"
        return subprocess.run([binary, *args], env=env, capture_output=True, text=True, timeout=60)


def effective_config(render: Render, container: dict) -> dict:
    """The settings the container would run with, as the meetbot binary computes them
    from the rendered ConfigMap and the container's environment (secrets stubbed)."""
    out = run_meetbot(render, container, ["config"])
    assert out.returncode == 0, f"meetbot rejects the chart's configuration: {out.stderr}"
    assert "stub-secret-value" not in out.stdout
    import tomllib

    return tomllib.loads(out.stdout)


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for n, unit in re.findall(r"(\d+)\s*(ms|s|m|h)\b", duration):
        total += int(n) * units[unit]
    assert total > 0, duration
    return total


def mib(quantity: str) -> float:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(quantity))
    assert m, quantity
    return int(m.group(1)) * {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, None: 1 / 1048576}[m.group(2)]


# ---------------------------------------------------------------------------- validation


def strict_schema(schema: dict) -> dict:
    """A CRD's structural schema as JSON Schema, strict like `kubectl apply
    --validate=strict`: unknown fields are errors unless the CRD preserves them."""
    s = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        s.pop("type", None)
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in s:
        s["properties"] = {k: strict_schema(v) for k, v in s["properties"].items()}
        if "additionalProperties" not in s and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            s["additionalProperties"] = False
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = strict_schema(s["additionalProperties"])
    if "items" in s:
        s["items"] = strict_schema(s["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in s:
            s[key] = [strict_schema(x) for x in s[key]]
    return s


def crd_validators() -> dict:
    out = {}
    for f in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(f.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict_schema(version["schema"]["openAPIV3Schema"])
            # metadata is the API server's ObjectMeta, validated by kubernetes-validate below.
            schema["properties"]["metadata"] = {"type": "object"}
            out[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return out


CRD_VALIDATORS = crd_validators()


def validate(obj: dict, version: str) -> list[str]:
    """Errors for one object: core kinds against Kubernetes' schemas (strict), custom
    resources against their CRDs (and their pod templates as batch/v1 Jobs)."""
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_VALIDATORS:
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in CRD_VALIDATORS[key].iter_errors(obj)
        ]
        meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
        errors += validate(meta, version)
        if obj["kind"] == "ScaledJob":
            job = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": obj["metadata"]["name"]},
                "spec": obj["spec"]["jobTargetRef"],
            }
            errors += validate(job, version)
        return errors
    try:
        kubernetes_validate.validate(obj, version, strict=True)
        return []
    except kubernetes_validate.ValidationError as e:
        return [f"{'/'.join(map(str, e.path))}: {e.message}"]
    except kubernetes_validate.utils.SchemaNotFoundError as e:
        return [f"no schema for {key}: {e}"]


# ---------------------------------------------------------------------- network policy


def labels_match(selector: dict, labels: dict) -> bool:
    if selector.get("matchExpressions"):
        raise AssertionError("matchExpressions are not evaluated by these tests")
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def policies_for(render: Render, pod_labels: dict) -> list[dict]:
    return [
        p for p in render.of_kind("NetworkPolicy") if labels_match(p["spec"]["podSelector"], pod_labels)
    ]


def port_allowed(rule: dict, protocol: str, port: int) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        lo = p["port"]
        hi = p.get("endPort", lo)
        if isinstance(lo, int) and lo <= port <= hi:
            return True
    return False


def ip_in_block(ip: str, block: dict) -> bool:
    addr = ipaddress.ip_address(ip)
    net = ipaddress.ip_network(block["cidr"], strict=False)
    if addr.version != net.version or addr not in net:
        return False
    return not any(
        addr in ipaddress.ip_network(e, strict=False)
        for e in block.get("except", [])
        if ipaddress.ip_network(e, strict=False).version == addr.version
    )


def egress_allows_ip(render: Render, pod_labels: dict, ip: str, protocol: str, port: int) -> bool:
    """Whether the pod may send to an address outside the cluster (not a pod) under the
    rendered NetworkPolicies (policies are additive; no policy selecting the pod = allowed)."""
    pols = [p for p in policies_for(render, pod_labels) if "Egress" in p["spec"].get("policyTypes", [])]
    if not pols:
        return True
    for p in pols:
        for rule in p["spec"].get("egress", []) or []:
            if not port_allowed(rule, protocol, port):
                continue
            peers = rule.get("to")
            if not peers:
                return True  # a rule without `to` allows every destination
            if any("ipBlock" in peer and ip_in_block(ip, peer["ipBlock"]) for peer in peers):
                return True
    return False


def egress_allows_pod(render: Render, pod_labels: dict, target_labels: dict, protocol: str, port: int, same_ns=True) -> bool:
    pols = [p for p in policies_for(render, pod_labels) if "Egress" in p["spec"].get("policyTypes", [])]
    for p in pols:
        for rule in p["spec"].get("egress", []) or []:
            if not port_allowed(rule, protocol, port):
                continue
            for peer in rule.get("to") or [{}]:
                if "ipBlock" in peer:
                    continue
                if "namespaceSelector" in peer and same_ns:
                    continue
                if "podSelector" in peer and not labels_match(peer["podSelector"], target_labels):
                    continue
                return True
    return False


def ingress_peers(render: Render, pod_labels: dict, protocol: str, port: int) -> list | None:
    """None if any source may connect on the port; else the peers that may."""
    pols = [p for p in policies_for(render, pod_labels) if "Ingress" in p["spec"].get("policyTypes", [])]
    if not pols:
        return None
    peers = []
    for p in pols:
        for rule in p["spec"].get("ingress", []) or []:
            if not port_allowed(rule, protocol, port):
                continue
            if not rule.get("from"):
                return None
            peers += rule["from"]
    return peers


def containers(tpl: dict) -> list[dict]:
    spec = tpl["spec"]
    return spec.get("initContainers", []) + spec["containers"]


# ------------------------------------------------------------------------------- tests

MINIMAL = load_values("minimal-values.yaml")
PRODUCTION = load_values("production-values.yaml")
OPENAI = merged(
    MINIMAL,
    {
        "stt": {"mode": "openai", "url": "https://api.openai.com/v1"},
        "secrets": {"existingSecret": "meetbot-secrets"},
    },
)
SAS = {
    "azure": {
        "auth": "sas",
        "sasSecret": "meetbot-storage",
        "blobUrl": "http://azurite.dev.svc:10000/devstoreaccount1",
        "queueUrl": "http://azurite.dev.svc:10001/devstoreaccount1",
        "tableUrl": "http://azurite.dev.svc:10002/devstoreaccount1",
    },
    "secrets": {"existingSecret": "meetbot-secrets"},
    "config": {"urls": {"allow_replay": True}},
}
SCENARIOS = {"minimal": MINIMAL, "production": PRODUCTION, "openai": OPENAI, "sas": SAS}
RENDERS = {name: Render(values) for name, values in SCENARIOS.items()}


class SchemaValidation(unittest.TestCase):
    def test_every_object_validates_against_kubernetes_and_crd_schemas(self):
        for name, r in RENDERS.items():
            kinds = sorted({o["kind"] for o in r.objects})
            for version in KUBE_VERSIONS:
                for obj in r.objects:
                    with self.subTest(scenario=name, kube=version, obj=f"{obj['kind']}/{obj['metadata']['name']}"):
                        self.assertEqual(validate(obj, version), [])
            for kind in ("ScaledJob", "TriggerAuthentication", "Deployment", "CronJob", "NetworkPolicy", "ConfigMap", "ServiceAccount", "Service"):
                self.assertIn(kind, kinds, name)

    def test_the_validators_catch_mistakes(self):
        # The checks above can fail: a typo in a pod field, a trigger metadata number and an
        # unknown ScaledJob field are each reported.
        r = RENDERS["minimal"]
        sj = copy.deepcopy(r.one("ScaledJob"))
        sj["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
        self.assertTrue(validate(sj, "1.37.0"))
        sj = copy.deepcopy(r.one("ScaledJob"))
        sj["spec"]["triggers"][0]["metadata"]["queueLength"] = 1
        self.assertTrue(validate(sj, "1.37.0"))
        sj = copy.deepcopy(r.one("ScaledJob"))
        sj["spec"]["scalingStrategy"]["strategy"] = "fastest"
        self.assertTrue(validate(sj, "1.37.0"))
        dep = copy.deepcopy(r.one("Deployment", "serve"))
        dep["spec"]["template"]["spec"]["securityContext"]["runAsNonroot"] = True
        self.assertTrue(validate(dep, "1.37.0"))

    def test_lint_is_clean_for_every_scenario(self):
        for name, values in SCENARIOS.items():
            for version in ("v1.29.0", "v1.37.0"):
                report = helm.lint(CHART, values, strict=True, kube_version=version)
                problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
                self.assertEqual(problems, [], f"{name} {version}: {report}")

    def test_values_schema_rejects_bad_values(self):
        bad = [
            {"worker": {"spoolSize": "1Gi"}},  # unknown key (typo)
            {"azure": {"auth": "managed_identity"}},  # needs the metadata endpoint
            {"worker": {"spoolSizeLimit": "1G"}},
            {"stt": {"mode": "deepgram"}},
            {"queue": {"name": "Jobs_Queue"}},
            {"azure": {"clientId": "not-a-uuid"}},
            {"image": {"digest": "latest"}},
            {"networkPolicy": {"extraEgress": [{"ports": [{"port": 443}]}]}},  # no `to`
            {"config": {"lifecycle": {"grace": {"nested": "x"}}}},
        ]
        with helm.Chart.load(CHART) as chart:
            for b in bad:
                with self.subTest(values=b):
                    with self.assertRaises(helm.HelmValuesError):
                        chart.validate_schema(merged(MINIMAL, b))

    def test_missing_required_values_are_named_all_at_once(self):
        with helm.Chart.load(CHART) as chart:
            with self.assertRaises(helm.HelmRenderError) as e:
                chart.render({}, name="mb", namespace="meetbot")
        msg = str(e.exception)
        for key in ("azure.storageAccount", "azure.clientId", "secrets.existingSecret"):
            self.assertIn(key, msg)


class PodSecurity(unittest.TestCase):
    def test_every_pod_is_locked_down(self):
        for name, r in RENDERS.items():
            pods = r.pod_templates()
            self.assertGreaterEqual(len(pods), 3, name)
            for owner, tpl in pods:
                with self.subTest(scenario=name, pod=owner):
                    spec = tpl["spec"]
                    psc = spec.get("securityContext", {})
                    self.assertIs(psc.get("runAsNonRoot"), True)
                    self.assertNotEqual(psc.get("runAsUser"), 0)
                    self.assertEqual(psc.get("seccompProfile", {}).get("type"), "RuntimeDefault")
                    self.assertIs(spec.get("automountServiceAccountToken"), False)
                    for host in ("hostNetwork", "hostPID", "hostIPC"):
                        self.assertFalse(spec.get(host, False))
                    for v in spec.get("volumes", []):
                        self.assertNotIn("hostPath", v)
                    for c in containers(tpl):
                        sc = c.get("securityContext", {})
                        self.assertIs(sc.get("readOnlyRootFilesystem"), True, c["name"])
                        self.assertIs(sc.get("allowPrivilegeEscalation"), False, c["name"])
                        self.assertFalse(sc.get("privileged", False), c["name"])
                        self.assertIn("ALL", sc.get("capabilities", {}).get("drop", []), c["name"])
                        self.assertFalse(sc.get("capabilities", {}).get("add"), c["name"])
                        self.assertIs(sc.get("runAsNonRoot", psc.get("runAsNonRoot")), True)
                        self.assertNotEqual(sc.get("runAsUser", psc.get("runAsUser")), 0)
                        self.assertIn(
                            sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type"),
                            ("RuntimeDefault", "Localhost"),
                        )
                        res = c.get("resources", {})
                        self.assertTrue(res.get("requests", {}).get("cpu"), c["name"])
                        self.assertTrue(res.get("requests", {}).get("memory"), c["name"])
                        self.assertTrue(res.get("limits", {}).get("memory"), c["name"])
                        # Every writable path is a volume: the root filesystem is read-only.
                        for m in c.get("volumeMounts", []):
                            vol = next(v for v in spec["volumes"] if v["name"] == m["name"])
                            if "emptyDir" not in vol:
                                self.assertIs(m.get("readOnly"), True, f"{c['name']} {m['mountPath']}")

    def test_service_accounts_carry_workload_identity(self):
        for name in ("minimal", "production", "openai"):
            r = RENDERS[name]
            for owner, tpl in r.pod_templates():
                with self.subTest(scenario=name, pod=owner):
                    sa = r.named("ServiceAccount", tpl["spec"]["serviceAccountName"])
                    self.assertIs(sa.get("automountServiceAccountToken"), False)
                    component = tpl["metadata"]["labels"]["app.kubernetes.io/component"]
                    if component == "stt-serve":
                        # No Azure access at all.
                        self.assertNotIn("azure.workload.identity/use", tpl["metadata"]["labels"])
                        self.assertNotIn("azure.workload.identity/client-id", sa["metadata"].get("annotations", {}))
                        continue
                    self.assertEqual(tpl["metadata"]["labels"].get("azure.workload.identity/use"), "true")
                    client = sa["metadata"]["annotations"]["azure.workload.identity/client-id"]
                    values = SCENARIOS[name]
                    expected = values.get(component, {}).get("azureClientId") or values["azure"]["clientId"]
                    self.assertEqual(client, expected)
        # Production gives each component its own identity.
        ids = {
            sa["metadata"]["annotations"]["azure.workload.identity/client-id"]
            for sa in RENDERS["production"].of_kind("ServiceAccount")
            if "annotations" in sa["metadata"]
        }
        self.assertEqual(len(ids), 3)
        # SAS mode: no identity annotations, the SAS comes from a Secret reference.
        r = RENDERS["sas"]
        for owner, tpl in r.pod_templates():
            self.assertNotIn("azure.workload.identity/use", tpl["metadata"]["labels"])
            env = {e["name"]: e for e in containers(tpl)[0]["env"]}
            self.assertEqual(env["MEETBOT_AZURE__STORAGE_SAS"]["valueFrom"]["secretKeyRef"]["name"], "meetbot-storage")


class Worker(unittest.TestCase):
    def test_scaled_job_runs_one_pod_per_queued_meeting(self):
        for name, r in RENDERS.items():
            with self.subTest(scenario=name):
                sj = r.one("ScaledJob")
                spec = sj["spec"]
                job = spec["jobTargetRef"]
                self.assertEqual((job["parallelism"], job["completions"]), (1, 1))
                [trigger] = spec["triggers"]
                self.assertEqual(trigger["type"], "azure-queue")
                meta = trigger["metadata"]
                self.assertEqual(meta["queueName"], SCENARIOS[name].get("queue", {}).get("name", "meetbot-jobs"))
                self.assertEqual(meta["queueLength"], "1")
                # Leased (running) and scheduled jobs are invisible: only visible ones start pods.
                self.assertEqual(meta["queueLengthStrategy"], "visibleonly")
                self.assertEqual(spec["scalingStrategy"]["strategy"], "accurate")
                self.assertEqual(spec["rollout"]["strategy"], "gradual")
                auth = r.named("TriggerAuthentication", trigger["authenticationRef"]["name"])
                if name == "sas":
                    [ref] = auth["spec"]["secretTargetRef"]
                    self.assertEqual((ref["parameter"], ref["name"]), ("connection", "meetbot-storage"))
                else:
                    self.assertEqual(meta["accountName"], SCENARIOS[name]["azure"]["storageAccount"])
                    self.assertEqual(auth["spec"]["podIdentity"]["provider"], "azure-workload")
                # The worker's queue is the one the config names.
                tpl = job["template"]
                cfg = effective_config(r, tpl["spec"]["containers"][0])
                self.assertEqual(cfg["queue"]["name"], meta["queueName"])
                self.assertEqual(tpl["spec"]["containers"][0]["args"], ["worker"])
                # A pod is pending (counted against new Jobs) until Ready, i.e. in a meeting.
                self.assertEqual(spec["scalingStrategy"]["pendingPodConditions"], ["Ready"])
                probe = tpl["spec"]["containers"][0]["readinessProbe"]["httpGet"]
                self.assertEqual(probe["path"], "/readyz")

    def test_spool_is_memory_backed_and_where_the_worker_writes(self):
        for name, r in RENDERS.items():
            with self.subTest(scenario=name):
                tpl = r.one("ScaledJob")["spec"]["jobTargetRef"]["template"]
                [c] = tpl["spec"]["containers"]
                cfg = effective_config(r, c)
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                volumes = {v["name"]: v for v in tpl["spec"]["volumes"]}
                spool = volumes[mounts[cfg["paths"]["spool_dir"]]]
                self.assertEqual(spool["emptyDir"]["medium"], "Memory")
                self.assertTrue(spool["emptyDir"]["sizeLimit"])
                # Every other path meetbot writes is on a memory-backed volume too.
                for key in ("data_dir", "audit_log", "key_file"):
                    path = cfg["paths"][key]
                    mount = max((m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")), key=len)
                    self.assertEqual(volumes[mounts[mount]]["emptyDir"]["medium"], "Memory", key)
                # The memory limit covers the process plus completely full volumes.
                limit = mib(c["resources"]["limits"]["memory"])
                vols = sum(mib(v["emptyDir"]["sizeLimit"]) for v in volumes.values() if "emptyDir" in v)
                rss = WORKER_RSS_MIB["embedded" if cfg["stt"]["provider"] == "embedded" else "remote"]
                self.assertGreaterEqual(limit, vols + rss, f"{limit} < {vols} + {rss}")
                self.assertGreaterEqual(mib(c["resources"]["requests"]["memory"]), rss)

    def test_termination_grace_outlasts_commit_and_webhook_drain(self):
        for name, r in RENDERS.items():
            with self.subTest(scenario=name):
                tpl = r.one("ScaledJob")["spec"]["jobTargetRef"]["template"]
                cfg = effective_config(r, tpl["spec"]["containers"][0])
                # The worker's reporter gets webhooks.drain + 30 s after the meeting (worker.rs).
                need = seconds(cfg["lifecycle"]["grace"]) + seconds(cfg["webhooks"]["drain"]) + 30
                self.assertGreater(tpl["spec"]["terminationGracePeriodSeconds"], need)
                # Never evicted for bin-packing mid-meeting; and never outlives its deadline.
                self.assertEqual(tpl["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"], "false")
                job = r.one("ScaledJob")["spec"]["jobTargetRef"]
                self.assertGreater(job["activeDeadlineSeconds"], seconds(cfg["auto_leave"]["max_duration"]))

    def test_meetings_can_be_protected_from_voluntary_evictions(self):
        self.assertEqual(RENDERS["minimal"].of_kind("PodDisruptionBudget"), [RENDERS["minimal"].one("PodDisruptionBudget", "serve")])
        r = Render(merged(MINIMAL, {"worker": {"protectMeetings": True}}))
        pdb = r.one("PodDisruptionBudget", "worker")
        self.assertEqual(pdb["spec"]["maxUnavailable"], 0)
        tpl = r.one("ScaledJob")["spec"]["jobTargetRef"]["template"]
        self.assertTrue(labels_match(pdb["spec"]["selector"], tpl["metadata"]["labels"]))
        self.assertFalse(labels_match(pdb["spec"]["selector"], r.one("Deployment", "serve")["spec"]["template"]["metadata"]["labels"]))
        for obj in r.objects:
            self.assertEqual(validate(obj, "1.37.0"), [])

    def test_a_grace_period_shorter_than_the_commit_is_refused(self):
        for override in (
            {"worker": {"terminationGracePeriodSeconds": 50}},
            {"config": {"lifecycle": {"grace": "80s"}}},
            {"config": {"webhooks": {"drain": "1m 10s"}}},
        ):
            with self.subTest(values=override):
                with helm.Chart.load(CHART) as chart:
                    with self.assertRaisesRegex(helm.HelmRenderError, "terminationGracePeriodSeconds"):
                        chart.render(merged(MINIMAL, override), name="mb", namespace="meetbot")

    def test_worker_key_custody(self):
        # With Key Vault: keys wrapped by it. Without: ephemeral (never written anywhere),
        # never the local key file, whose key would sit on the spool's own volume.
        for name, want in (("production", "azure_keyvault"), ("minimal", "ephemeral"), ("sas", "ephemeral")):
            with self.subTest(scenario=name):
                r = RENDERS[name]
                c = r.one("ScaledJob")["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]
                cfg = effective_config(r, c)
                self.assertEqual(cfg["keys"]["provider"], want)
        cfg = effective_config(RENDERS["production"], RENDERS["production"].one("ScaledJob")["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0])
        self.assertEqual(cfg["keys"]["vault_url"], "https://meetbot-kv.vault.azure.net")
        self.assertEqual(cfg["keys"]["key_name"], "recording-kek")

    def test_receipt_chain_mac_needs_key_vault(self):
        # With Key Vault the tenant chains are MACed under a vault-wrapped key; without
        # it no key outlives a pod, so the chart turns the MAC off rather than break appends.
        for name, mac in (("production", "keys"), ("minimal", "none")):
            r = RENDERS[name]
            for kind in ("ScaledJob", "CronJob"):
                objs = r.of_kind(kind)
                if not objs:
                    continue
                spec = objs[0]["spec"]
                tmpl = spec["jobTargetRef"]["template"] if kind == "ScaledJob" else spec["jobTemplate"]["spec"]["template"]
                cfg = effective_config(r, tmpl["spec"]["containers"][0])
                with self.subTest(render=name, kind=kind):
                    self.assertEqual(cfg["audit"]["mac"], mac)

    def test_stt_modes_configure_the_worker(self):
        r = RENDERS["production"]
        c = r.one("ScaledJob")["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]
        cfg = effective_config(r, c)
        svc = r.one("Service", "stt-serve")
        self.assertEqual(cfg["stt"]["provider"], "openai")
        self.assertEqual(cfg["stt"]["url"], f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}/v1")
        self.assertEqual(cfg["keys"]["provider"], "azure_keyvault")
        # Smaller worker with a shared Whisper; the shared server has the model's memory.
        self.assertLess(mib(c["resources"]["requests"]["memory"]), 200)
        stt = r.one("Deployment", "stt-serve")["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(stt["args"], ["stt-serve"])
        self.assertEqual(effective_config(r, stt)["stt_serve"]["listen"], f"0.0.0.0:{stt['ports'][0]['containerPort']}")
        self.assertGreaterEqual(mib(stt["resources"]["limits"]["memory"]), 231 / 1.048576)
        # External OpenAI-compatible STT: key from the Secret, never in the ConfigMap.
        r = RENDERS["openai"]
        c = r.one("ScaledJob")["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual(env["MEETBOT_STT__API_KEY"]["valueFrom"]["secretKeyRef"], {"name": "meetbot-secrets", "key": "stt-api-key", "optional": True})
        self.assertEqual(effective_config(r, c)["stt"]["url"], "https://api.openai.com/v1")
        self.assertNotIn("stt-serve", {o["metadata"]["labels"].get("app.kubernetes.io/component") for o in r.objects})
        # Embedded: the model is in the image where the config points.
        r = RENDERS["minimal"]
        c = r.one("ScaledJob")["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]
        self.assertEqual(effective_config(r, c)["stt"]["model_dir"], "/models/faster-whisper-tiny.en")


class ServeSweepSttServe(unittest.TestCase):
    def test_serve_deployment_service_probes(self):
        for name, r in RENDERS.items():
            with self.subTest(scenario=name):
                dep = r.one("Deployment", "serve")
                tpl = dep["spec"]["template"]
                [c] = tpl["spec"]["containers"]
                self.assertEqual(c["args"], ["serve"])
                cfg = effective_config(r, c)
                ports = {p["name"]: p["containerPort"] for p in c["ports"]}
                self.assertEqual(cfg["serve"]["listen"], f"0.0.0.0:{ports['http']}")
                # /metrics (tenant labels) on its own named port, for in-cluster scraping.
                self.assertEqual(cfg["serve"]["metrics_listen"], f"0.0.0.0:{ports['metrics']}")
                self.assertNotEqual(ports["metrics"], ports["http"])
                self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/healthz")
                self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
                svc = r.one("Service", "serve")
                self.assertTrue(labels_match({"matchLabels": svc["spec"]["selector"]}, tpl["metadata"]["labels"]))
                # The Service exposes the API port only, never the metrics port.
                self.assertEqual([p["targetPort"] for p in svc["spec"]["ports"]], ["http"])
                self.assertTrue(labels_match(dep["spec"]["selector"], tpl["metadata"]["labels"]))
                # Tenants file mounted where the config reads it.
                mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
                self.assertTrue(cfg["tenants"]["file"].startswith(mounts["secrets"] + "/"))
                pdb = r.one("PodDisruptionBudget", "serve")
                self.assertTrue(labels_match(pdb["spec"]["selector"], tpl["metadata"]["labels"]))

    def test_sweep_cronjob(self):
        for name, r in RENDERS.items():
            with self.subTest(scenario=name):
                cj = r.one("CronJob", "sweep")
                self.assertEqual(cj["spec"]["concurrencyPolicy"], "Forbid")
                c = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
                self.assertEqual(c["args"], ["sweep"])
                self.assertEqual(effective_config(r, c)["store"]["kind"], "azure_blob")

    def test_key_vault_secrets_through_the_csi_driver(self):
        r = RENDERS["production"]
        for component in ("worker", "serve"):
            spc = r.one("SecretProviderClass", component)
            params = spc["spec"]["parameters"]
            self.assertEqual(params["keyvaultName"], "meetbot-kv")
            self.assertEqual(params["clientID"], PRODUCTION[component]["azureClientId"])
            objects = [yaml.safe_load(o) for o in yaml.safe_load(params["objects"])["array"]]
            self.assertIn({"objectName": "meetbot-tenants", "objectType": "secret", "objectAlias": "tenants.toml"}, objects)
        tpl = r.one("ScaledJob")["spec"]["jobTargetRef"]["template"]
        vol = next(v for v in tpl["spec"]["volumes"] if v["name"] == "secrets")
        self.assertEqual(vol["csi"]["driver"], "secrets-store.csi.k8s.io")
        self.assertEqual(vol["csi"]["volumeAttributes"]["secretProviderClass"], r.one("SecretProviderClass", "worker")["metadata"]["name"])
        # Secrets never pass through values: the one Secret the chart renders is the shared
        # stt-serve's generated key, and only with stt.mode=sttServe.
        for name, rr in RENDERS.items():
            secrets = [o["metadata"]["name"] for o in rr.of_kind("Secret")]
            expected = ["mb-meetbot-stt-serve-key"] if SCENARIOS[name].get("stt", {}).get("mode") == "sttServe" else []
            self.assertEqual(secrets, expected, name)

    def test_config_has_no_secrets(self):
        for name, r in RENDERS.items():
            text = r.config_toml()
            for key in ("api_key", "storage_sas", "sig="):
                self.assertNotIn(key, text, name)


class FakeKubeApi:
    """A Kubernetes API server on loopback that knows Secrets, for Helm's `lookup`."""

    def __init__(self, secrets: dict[str, dict]):
        import http.server
        import json
        import threading

        fake = self
        self.secrets = secrets
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, code: int, obj: dict):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?")[0]
                fake.requests.append(path)
                if path == "/api/v1":
                    return self.answer(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                        {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret", "verbs": ["get"]}]})
                prefix = "/api/v1/namespaces/meetbot/secrets/"
                if path.startswith(prefix) and path[len(prefix):] in fake.secrets:
                    return self.answer(200, fake.secrets[path[len(prefix):]])
                return self.answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def secret_value(secret: dict, key: str) -> str:
    import base64

    return base64.b64decode(secret["data"][key]).decode()


class SttServeKey(unittest.TestCase):
    def containers(self, r: Render) -> tuple[dict, dict]:
        worker = r.one("ScaledJob")["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]
        stt = r.one("Deployment", "stt-serve")["spec"]["template"]["spec"]["containers"][0]
        return worker, stt

    def test_a_generated_key_guards_stt_serve_and_workers_send_it(self):
        r = RENDERS["production"]
        secret = r.one("Secret", "stt-serve")
        name = secret["metadata"]["name"]
        key = secret_value(secret, "api-key")
        self.assertRegex(key, r"^[A-Za-z0-9]{48}$")
        worker, stt = self.containers(r)
        ref = {"name": name, "key": "api-key"}
        stt_env = {e["name"]: e for e in stt["env"]}
        worker_env = {e["name"]: e for e in worker["env"]}
        # Required (not optional) on both sides: no pod runs without it.
        self.assertEqual(stt_env["MEETBOT_STT_SERVE__API_KEY"]["valueFrom"]["secretKeyRef"], ref)
        self.assertEqual(worker_env["MEETBOT_STT__API_KEY"]["valueFrom"]["secretKeyRef"], ref)
        # meetbot reads them as the server's key and the worker's STT key.
        self.assertEqual(effective_config(r, stt)["stt_serve"]["api_key"], "<redacted>")
        self.assertEqual(effective_config(r, worker)["stt"]["api_key"], "<redacted>")
        self.assertNotIn(key, r.config_toml())
        # Another install gets another key.
        self.assertNotEqual(secret_value(Render(PRODUCTION).one("Secret", "stt-serve"), "api-key"), key)

    def test_stt_serve_on_the_pod_network_starts_only_with_its_key(self):
        r = RENDERS["production"]
        _, stt = self.containers(r)
        self.assertEqual(stt["args"], ["stt-serve"])
        # Without the key, the binary refuses the chart's 0.0.0.0 listen address up front.
        out = run_meetbot(r, stt, stt["args"], without=("MEETBOT_STT_SERVE__API_KEY",))
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("refusing to listen on a non-loopback address without an API key", out.stderr)
        # With it, it gets past that check (and stops at the model, absent on this machine,
        # before it binds anything).
        out = run_meetbot(r, stt, stt["args"])
        self.assertNotEqual(out.returncode, 0)
        self.assertNotIn("refusing", out.stderr)
        self.assertIn("embedded STT", out.stderr)
        self.assertNotIn("stub-secret-value", out.stderr)

    def test_the_key_is_kept_across_upgrades(self):
        import base64

        kept = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mb-meetbot-stt-serve-key", "namespace": "meetbot"},
                "data": {"api-key": base64.b64encode(b"the-key-of-the-first-install").decode()}}
        for existing, upgrade in (({"mb-meetbot-stt-serve-key": kept}, True), ({}, False)):
            api = FakeKubeApi(existing)
            try:
                cfg = helm.Config(kube_apiserver=api.url, namespace="meetbot")
                with helm.Chart.load(CHART) as chart:
                    manifests = cfg.render(chart, PRODUCTION, name="mb", namespace="meetbot", is_upgrade=upgrade, is_install=not upgrade)
            finally:
                api.close()
            self.assertIn("/api/v1/namespaces/meetbot/secrets/mb-meetbot-stt-serve-key", api.requests)
            [secret] = [d for path, text in manifests.items() if not path.endswith("NOTES.txt")
                        for d in yaml.safe_load_all(text) if d and d["kind"] == "Secret"]
            value = secret_value(secret, "api-key")
            if upgrade:
                self.assertEqual(value, "the-key-of-the-first-install")
            else:
                self.assertRegex(value, r"^[A-Za-z0-9]{48}$")

    def test_an_existing_secret_is_used_as_is(self):
        r = Render(merged(PRODUCTION, {"sttServe": {"apiKeySecret": "my-stt-key", "apiKeySecretKey": "token"}}))
        self.assertEqual(r.of_kind("Secret"), [])
        worker, stt = self.containers(r)
        ref = {"name": "my-stt-key", "key": "token"}
        self.assertEqual({e["name"]: e for e in stt["env"]}["MEETBOT_STT_SERVE__API_KEY"]["valueFrom"]["secretKeyRef"], ref)
        self.assertEqual({e["name"]: e for e in worker["env"]}["MEETBOT_STT__API_KEY"]["valueFrom"]["secretKeyRef"], ref)
        with helm.Chart.load(CHART) as chart:
            with self.assertRaises(helm.HelmValuesError):
                chart.validate_schema(merged(PRODUCTION, {"sttServe": {"apiKeySecretKey": "bad key/"}}))


class NetworkPolicyTests(unittest.TestCase):
    PUBLIC = "52.112.0.10"  # a public address (meeting server / Azure front end)

    def test_metadata_addresses_are_unreachable_from_every_pod(self):
        for name, r in RENDERS.items():
            for owner, tpl in r.pod_templates():
                labels = tpl["metadata"]["labels"]
                with self.subTest(scenario=name, pod=owner):
                    self.assertTrue(policies_for(r, labels), "no NetworkPolicy selects this pod")
                    for ip in METADATA_ADDRESSES:
                        for proto, port in (("TCP", 80), ("TCP", 443), ("UDP", 53)):
                            self.assertFalse(egress_allows_ip(r, labels, ip, proto, port), f"{ip} {proto}/{port}")
                    for private in ("10.0.0.1", "192.168.1.1", "172.16.0.1", "127.0.0.1", "fd12::1"):
                        if name == "production" and private.startswith("10."):
                            continue  # production allows its private endpoints on purpose
                        self.assertFalse(egress_allows_ip(r, labels, private, "TCP", 443), private)

    def test_egress_is_what_each_component_needs(self):
        r = RENDERS["production"]
        pods = {tpl["metadata"]["labels"]["app.kubernetes.io/component"]: tpl["metadata"]["labels"] for _, tpl in r.pod_templates()}
        dns = {"k8s-app": "kube-dns"}
        for component in ("worker", "serve", "sweep"):
            self.assertTrue(egress_allows_pod(r, pods[component], dns, "UDP", 53, same_ns=False), component)
            self.assertTrue(egress_allows_ip(r, pods[component], self.PUBLIC, "TCP", 443), component)
        # Worker: meeting media on any UDP port, IPv6 too; the private endpoint and Janus.
        self.assertTrue(egress_allows_ip(r, pods["worker"], self.PUBLIC, "UDP", 50000))
        self.assertTrue(egress_allows_ip(r, pods["worker"], "2603:1030::10", "UDP", 3478))
        self.assertTrue(egress_allows_ip(r, pods["worker"], "10.40.8.5", "TCP", 443))
        self.assertFalse(egress_allows_ip(r, pods["worker"], "10.40.8.5", "TCP", 22))
        self.assertTrue(egress_allows_pod(r, pods["worker"], pods["stt-serve"], "TCP", PRODUCTION.get("sttServe", {}).get("port", 8799)))
        # Sweep talks to Azure only: HTTPS.
        self.assertFalse(egress_allows_ip(r, pods["sweep"], self.PUBLIC, "UDP", 50000))
        # stt-serve has no egress at all (only DNS would be useless: the model is local).
        self.assertFalse(egress_allows_ip(r, pods["stt-serve"], self.PUBLIC, "TCP", 443))
        self.assertFalse(egress_allows_pod(r, pods["stt-serve"], dns, "UDP", 53, same_ns=False))

    def test_ingress(self):
        r = RENDERS["production"]
        pods = {tpl["metadata"]["labels"]["app.kubernetes.io/component"]: tpl["metadata"]["labels"] for _, tpl in r.pod_templates()}
        # stt-serve: from workers only.
        peers = ingress_peers(r, pods["stt-serve"], "TCP", 8799)
        self.assertEqual(len(peers), 1)
        self.assertTrue(labels_match(peers[0]["podSelector"], pods["worker"]))
        # Worker metrics: monitoring only; nothing else reaches a worker.
        peers = ingress_peers(r, pods["worker"], "TCP", 9090)
        self.assertEqual(peers, PRODUCTION["networkPolicy"]["metricsFrom"])
        self.assertEqual(ingress_peers(r, pods["worker"], "TCP", 22), [])
        self.assertEqual(ingress_peers(r, pods["sweep"], "TCP", 8080), [])
        # Serve: the API from the ingress controller only; its metrics port from monitoring only.
        peers = ingress_peers(r, pods["serve"], "TCP", 8080)
        self.assertEqual(peers, PRODUCTION["networkPolicy"]["serveFrom"])
        peers = ingress_peers(r, pods["serve"], "TCP", 9091)
        self.assertEqual(peers, PRODUCTION["networkPolicy"]["metricsFrom"])
        # Minimal: the API open to any source (no serveFrom); serve metrics and workers closed.
        r = RENDERS["minimal"]
        pods = {tpl["metadata"]["labels"]["app.kubernetes.io/component"]: tpl["metadata"]["labels"] for _, tpl in r.pod_templates()}
        self.assertIsNone(ingress_peers(r, pods["serve"], "TCP", 8080))
        self.assertEqual(ingress_peers(r, pods["serve"], "TCP", 9091), [])
        self.assertEqual(ingress_peers(r, pods["worker"], "TCP", 9090), [])

    def test_serve_metrics_cannot_share_the_api_port(self):
        with helm.Chart.load(CHART) as chart:
            with self.assertRaisesRegex(helm.HelmRenderError, "serve.metricsPort"):
                chart.render(merged(MINIMAL, {"serve": {"metricsPort": 8080}}), name="mb", namespace="meetbot")

    def test_values_that_would_open_the_metadata_address_are_refused(self):
        hostile = [
            {"networkPolicy": {"extraEgress": [{"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}]}]}},
            {"networkPolicy": {"extraEgress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}},
            {"networkPolicy": {"extraEgress": [{"to": [{"ipBlock": {"cidr": "168.0.0.0/6"}}]}]}},
            {"networkPolicy": {"extraEgress": [{"to": [{"ipBlock": {"cidr": "168.63.0.0/16", "except": ["168.63.1.0/24"]}}]}]}},
            {"networkPolicy": {"publicCIDRs": ["128.0.0.0/1"]}},
            {"networkPolicy": {"publicCIDRs": ["fd00::/8"]}},
            {"networkPolicy": {"publicCIDRs": ["::/1"]}},
        ]
        for values in hostile:
            with self.subTest(values=values):
                with helm.Chart.load(CHART) as chart:
                    with self.assertRaisesRegex(helm.HelmRenderError, "metadata|IPv6 egress"):
                        chart.render(merged(MINIMAL, values), name="mb", namespace="meetbot")
        # The same rule with the metadata range excepted is accepted, and stays closed.
        ok = merged(MINIMAL, {"networkPolicy": {"extraEgress": [{"to": [{"ipBlock": {"cidr": "168.0.0.0/6", "except": ["169.254.0.0/16", "168.63.129.16/32"]}}]}]}})
        r = Render(ok)
        labels = r.one("ScaledJob")["spec"]["jobTargetRef"]["template"]["metadata"]["labels"]
        self.assertTrue(egress_allows_ip(r, labels, "170.1.2.3", "TCP", 443))
        for ip in METADATA_ADDRESSES:
            self.assertFalse(egress_allows_ip(r, labels, ip, "TCP", 80))


class Config(unittest.TestCase):
    def test_config_overrides_reach_meetbot_with_their_types(self):
        r = RENDERS["production"]
        c = r.one("ScaledJob")["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]
        cfg = effective_config(r, c)
        self.assertEqual(cfg["queue"]["max_attempts"], 5)  # an integer, not 5.0
        self.assertEqual(cfg["lifecycle"]["grace"], "40s")
        self.assertEqual(cfg["urls"]["allow"], ["janus.meet.internal.example.com"])
        self.assertEqual(cfg["azure"]["blob_url"], "https://meetbotprod.blob.core.windows.net")

    def test_model_dir_and_paths_win_over_the_image_environment(self):
        self.assertIn("MEETBOT_STT__MODEL_DIR", image_env())
        r = Render(merged(MINIMAL, {"model": {"dir": "/models/faster-whisper-small.en", "volume": {"persistentVolumeClaim": {"claimName": "whisper"}}}}))
        c = r.one("ScaledJob")["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]
        self.assertEqual(effective_config(r, c)["stt"]["model_dir"], "/models/faster-whisper-small.en")
        for override in ({"paths": {"spool_dir": "/tmp/spool"}}, {"stt": {"model_dir": "/x"}}):
            with self.subTest(config=override):
                with helm.Chart.load(CHART) as chart:
                    with self.assertRaisesRegex(helm.HelmRenderError, "config\\.(paths|stt)"):
                        chart.render(merged(MINIMAL, {"config": override}), name="mb", namespace="meetbot")

    def test_a_misspelt_setting_fails_in_meetbot_not_silently(self):
        r = Render(merged(MINIMAL, {"config": {"lifecycle": {"grase": "40s"}}}))
        c = r.one("ScaledJob")["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]
        with self.assertRaisesRegex(AssertionError, "grase"):
            effective_config(r, c)

    def test_config_changes_roll_the_pods(self):
        a = RENDERS["minimal"].one("Deployment", "serve")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        b = Render(merged(MINIMAL, {"config": {"serve": {"max_list": 50}}})).one("Deployment", "serve")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        self.assertNotEqual(a, b)


if __name__ == "__main__":
    unittest.main(verbosity=2)
