#!/usr/bin/env python3
"""Offline checks of the deploy kit (no Docker engine, no cluster needed).

    python3 deploy/validate.py

- every YAML file under deploy/ parses;
- docker-compose.yml: service keys known to the Compose spec, depends_on
  targets and conditions, secrets and volumes declared;
- every POSTLINE__SECTION__KEY name used in compose, k8s and systemd files,
  and every key of deploy/k8s/production.toml, exists in config/default.toml
  with a value of the same type (Settings denies unknown fields);
- Kubernetes: the kustomize build (if kubectl is installed, else the raw
  files) — every document has apiVersion/kind/metadata.name, selectors match
  pod labels, mounts match volumes, referenced Secret keys and ConfigMaps
  exist, probe ports are declared, pods run as non-root with a read-only root
  file system, POSTLINE__LIMITS__NODES equals the Deployment's replicas;
- systemd: `systemd-analyze verify` on copies whose Exec lines run /bin/true
  (the real binary is not installed here);
- Dockerfile: the HEALTHCHECK command is valid JSON and the image runs as
  uid 10001 with ENTRYPOINT postline;
- docs/OPERATIONS.md names every key of config/default.toml and its env name.

Exit status 1 when anything fails.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


def rel(path):
    return os.path.relpath(path, ROOT)


# --- config keys -----------------------------------------------------------

with open(os.path.join(ROOT, "config", "default.toml"), "rb") as f:
    DEFAULTS = tomllib.load(f)


def lookup(path):
    node = DEFAULTS
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def env_key_known(name, where):
    """POSTLINE__A__B__C -> a.b.c must be a leaf of default.toml."""
    if not name.startswith("POSTLINE__"):
        return
    path = name[len("POSTLINE__"):].lower().split("__")
    value = lookup(path)
    check(value is not None and not isinstance(value, dict),
          f"{where}: {name} names no config key ({'.'.join(path)})")


def toml_keys_known(doc, where, prefix=()):
    for key, value in doc.items():
        path = prefix + (key,)
        default = lookup(path)
        if not check(default is not None, f"{where}: unknown key {'.'.join(path)}"):
            continue
        if isinstance(value, dict):
            toml_keys_known(value, where, path)
        else:
            check(type(value) is type(default),
                  f"{where}: {'.'.join(path)} is {type(value).__name__}, "
                  f"default is {type(default).__name__}")


# --- YAML parses -----------------------------------------------------------

for path in sorted(glob.glob(os.path.join(DEPLOY, "**", "*.y*ml"), recursive=True)):
    try:
        with open(path) as f:
            list(yaml.safe_load_all(f))
    except yaml.YAMLError as e:
        check(False, f"{rel(path)}: YAML does not parse: {e}")

# --- compose ---------------------------------------------------------------

# Service keys of the Compose specification (compose-spec.json, 2025).
COMPOSE_SERVICE_KEYS = set("""
develop deploy annotations attach build blkio_config cap_add cap_drop cgroup
cgroup_parent command configs container_name cpu_count cpu_percent cpu_shares
cpu_quota cpu_period cpu_rt_period cpu_rt_runtime cpus cpuset credential_spec
depends_on device_cgroup_rules devices dns dns_opt dns_search domainname
entrypoint env_file label_file environment expose extends provider
external_links extra_hosts gpus group_add healthcheck hostname image init ipc
isolation labels links logging mac_address mem_limit mem_reservation
mem_swappiness memswap_limit network_mode models networks oom_kill_disable
oom_score_adj pid pids_limit platform ports post_start pre_stop privileged
profiles pull_policy pull_refresh_after read_only restart runtime scale
security_opt shm_size secrets sysctls stdin_open stop_grace_period stop_signal
storage_opt tmpfs tty ulimits use_api_socket user uts userns_mode volumes
volumes_from working_dir
""".split())
HEALTHCHECK_KEYS = {"disable", "interval", "retries", "test", "timeout",
                    "start_period", "start_interval"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

compose_path = os.path.join(DEPLOY, "docker", "docker-compose.yml")
with open(compose_path) as f:
    compose = yaml.safe_load(f)
services = compose.get("services", {})
for top in compose:
    check(top in {"name", "services", "volumes", "secrets", "networks", "configs"}
          or top.startswith("x-"), f"compose: unknown top-level key {top}")
for name, svc in services.items():
    where = f"compose service {name}"
    for key in svc:
        check(key in COMPOSE_SERVICE_KEYS or key.startswith("x-"), f"{where}: unknown key {key}")
    check("image" in svc or "build" in svc, f"{where}: neither image nor build")
    for key in (svc.get("healthcheck") or {}):
        check(key in HEALTHCHECK_KEYS, f"{where}: unknown healthcheck key {key}")
    deps = svc.get("depends_on") or {}
    for dep, spec in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
        check(dep in services, f"{where}: depends on unknown service {dep}")
        if spec:
            check(spec.get("condition") in CONDITIONS, f"{where}: bad condition for {dep}")
        if spec.get("condition") == "service_healthy":
            check("healthcheck" in services.get(dep, {}),
                  f"{where}: waits for {dep} healthy but {dep} has no healthcheck")
    for secret in svc.get("secrets", []):
        name_ = secret if isinstance(secret, str) else secret.get("source")
        check(name_ in (compose.get("secrets") or {}), f"{where}: undeclared secret {name_}")
    for vol in svc.get("volumes", []):
        if isinstance(vol, str) and not vol.startswith((".", "/", "~")):
            check(vol.split(":")[0] in (compose.get("volumes") or {}),
                  f"{where}: undeclared volume {vol}")
    env = svc.get("environment") or {}
    for key, value in (env.items() if isinstance(env, dict) else ()):
        check(isinstance(value, (str, int, float, bool)) or value is None,
              f"{where}: environment {key} is not a scalar")
        env_key_known(key, where)
    key_file = env.get("POSTLINE__SECURITY__MASTER_KEY_FILE") if isinstance(env, dict) else None
    if key_file:
        check(key_file.startswith("/run/secrets/")
              and key_file.rsplit("/", 1)[1] in [s if isinstance(s, str) else s.get("target", s.get("source"))
                                                  for s in svc.get("secrets", [])],
              f"{where}: master key file {key_file} is not one of its mounted secrets")
for name in ("postgres", "migrate", "api", "worker", "mailpit"):
    check(name in services, f"compose: service {name} missing")

# --- env names in systemd and k8s files ------------------------------------

for path in glob.glob(os.path.join(DEPLOY, "systemd", "*")) + \
        glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml")):
    with open(path) as f:
        text = f.read()
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for name in re.findall(r"\bPOSTLINE__[A-Z0-9_]+", line):
            env_key_known(name, rel(path))

prod_toml = os.path.join(DEPLOY, "k8s", "production.toml")
with open(prod_toml, "rb") as f:
    toml_keys_known(tomllib.load(f), rel(prod_toml))

# --- docs/OPERATIONS.md lists every key -------------------------------------


def leaves(node, prefix=()):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


with open(os.path.join(ROOT, "docs", "OPERATIONS.md")) as f:
    operations = f.read()
for path, value in leaves(DEFAULTS):
    key = ".".join(path)
    env = "POSTLINE__" + "__".join(p.upper() for p in path)
    check(f"`{key}`" in operations and f"`{env}`" in operations,
          f"docs/OPERATIONS.md: {key} / {env} not documented")

# --- Kubernetes ------------------------------------------------------------

k8s_dir = os.path.join(DEPLOY, "k8s")
if shutil.which("kubectl"):
    out = subprocess.run(["kubectl", "kustomize", k8s_dir], capture_output=True, text=True)
    check(out.returncode == 0, f"kubectl kustomize failed: {out.stderr.strip()}")
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    k8s_source = "kubectl kustomize deploy/k8s"
else:
    docs = []
    for path in sorted(glob.glob(os.path.join(k8s_dir, "*.yaml"))):
        if os.path.basename(path) == "kustomization.yaml":
            continue
        with open(path) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    k8s_source = "raw files (kubectl not installed; ConfigMap generator not expanded)"

by_kind = {}
for doc in docs:
    ok = check(all(k in doc for k in ("apiVersion", "kind", "metadata"))
               and doc["metadata"].get("name"), f"k8s: document without apiVersion/kind/metadata.name: {str(doc)[:80]}")
    if ok:
        check("namespace" not in doc["metadata"],
              f"k8s {doc['kind']}/{doc['metadata']['name']}: hard-coded namespace")
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc

secrets = by_kind.get("Secret", {})
configmaps = by_kind.get("ConfigMap", {})


def secret_has(name, key):
    s = secrets.get(name)
    return s is not None and key in {**(s.get("data") or {}), **(s.get("stringData") or {})}


def check_pod(spec, where):
    psc = spec.get("securityContext") or {}
    check(psc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot not set")
    check(psc.get("runAsUser") == 10001, f"{where}: runAsUser is not 10001")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for v in volumes.values():
        if "configMap" in v and configmaps:
            check(v["configMap"]["name"] in configmaps, f"{where}: unknown ConfigMap {v['configMap']['name']}")
        if "secret" in v:
            for item in v["secret"].get("items", []):
                check(secret_has(v["secret"]["secretName"], item["key"]),
                      f"{where}: Secret {v['secret']['secretName']} has no key {item['key']}")
    env_by_container = {}
    for c in spec.get("containers", []):
        cw = f"{where} container {c['name']}"
        csc = c.get("securityContext") or {}
        check(csc.get("readOnlyRootFilesystem") is True, f"{cw}: root file system not read-only")
        check(csc.get("allowPrivilegeEscalation") is False, f"{cw}: privilege escalation allowed")
        for m in c.get("volumeMounts", []):
            check(m["name"] in volumes, f"{cw}: mounts undeclared volume {m['name']}")
        ports = {p.get("name") for p in c.get("ports", [])}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
            if isinstance(port, str):
                check(port in ports, f"{cw}: {probe} uses undeclared port {port}")
        env = {}
        for e in c.get("env", []):
            if "value" in e:
                check(isinstance(e["value"], str), f"{cw}: env {e['name']} value is not a string")
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                check(secret_has(ref["name"], ref["key"]), f"{cw}: Secret {ref['name']} has no key {ref['key']}")
            env[e["name"]] = e.get("value")
        key_file = env.get("POSTLINE__SECURITY__MASTER_KEY_FILE")
        check(key_file and any(key_file.startswith(m["mountPath"] + "/") for m in c.get("volumeMounts", [])),
              f"{cw}: the master key file is not on a mounted volume")
        check(env.get("POSTLINE_ENV") == "production", f"{cw}: POSTLINE_ENV is not production")
        env_by_container[c["name"]] = env
    return env_by_container


for name, dep in by_kind.get("Deployment", {}).items():
    where = f"Deployment {name}"
    spec = dep["spec"]
    labels = spec["template"]["metadata"]["labels"]
    sel = spec["selector"]["matchLabels"]
    check(all(labels.get(k) == v for k, v in sel.items()), f"{where}: selector does not match pod labels")
    envs = check_pod(spec["template"]["spec"], where)
    for env in envs.values():
        check(env.get("POSTLINE__LIMITS__NODES") == str(spec.get("replicas", 1)),
              f"{where}: POSTLINE__LIMITS__NODES != replicas")
    check(spec["template"]["spec"].get("terminationGracePeriodSeconds", 30) >= 40,
          f"{where}: terminationGracePeriodSeconds < 40")
for name, job in by_kind.get("Job", {}).items():
    check_pod(job["spec"]["template"]["spec"], f"Job {name}")
for name, svc in by_kind.get("Service", {}).items():
    sel = svc["spec"]["selector"]
    targets = [d for d in by_kind.get("Deployment", {}).values()
               if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
    check(len(targets) == 1, f"Service {name}: selects {len(targets)} Deployments")
    for t in targets:
        ports = {p.get("name") for c in t["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            check(not isinstance(p["targetPort"], str) or p["targetPort"] in ports,
                  f"Service {name}: targetPort {p['targetPort']} not declared by the pods")
for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
    sel = pdb["spec"]["selector"]["matchLabels"]
    check(any(all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
              for d in by_kind.get("Deployment", {}).values()), f"PDB {name}: selects no Deployment")
for kind in ("Deployment", "Service", "Secret", "Job", "ConfigMap"):
    check(kind in by_kind or (kind == "ConfigMap" and not shutil.which("kubectl")),
          f"k8s: no {kind}")

# --- systemd ---------------------------------------------------------------

systemd_report = "skipped (systemd-analyze not installed)"
if shutil.which("systemd-analyze"):
    with tempfile.TemporaryDirectory() as tmp:
        units = []
        for path in sorted(glob.glob(os.path.join(DEPLOY, "systemd", "*.service"))):
            with open(path) as f:
                text = f.read()
            text = re.sub(r"^(ExecStart(?:Pre)?)=/usr/local/bin/postline.*$", r"\1=/bin/true", text, flags=re.M)
            dst = os.path.join(tmp, os.path.basename(path))
            with open(dst, "w") as f:
                f.write(text)
            units.append(dst)
        out = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True)
        messages = (out.stdout + out.stderr).strip()
        check(out.returncode == 0 and not messages, f"systemd-analyze verify: {messages or out.returncode}")
        systemd_report = f"systemd-analyze verify (Exec -> /bin/true): rc={out.returncode}, " \
                         f"{'no warnings' if not messages else messages}"

# --- Dockerfile ------------------------------------------------------------

with open(os.path.join(DEPLOY, "docker", "Dockerfile")) as f:
    dockerfile = f.read()
m = re.search(r"^HEALTHCHECK[^\n]*\\\n\s*CMD (\[.*\])$", dockerfile, flags=re.M)
if check(m, "Dockerfile: no exec-form HEALTHCHECK"):
    try:
        check(json.loads(m.group(1))[0] == "bash", "Dockerfile: HEALTHCHECK is not run by bash")
    except json.JSONDecodeError as e:
        check(False, f"Dockerfile: HEALTHCHECK is not valid JSON: {e}")
for needle in ('USER 10001:10001', 'ENTRYPOINT ["postline"]', 'CMD ["serve"]', "EXPOSE 8080",
               "cargo build --release --locked", "FROM rust:1-bookworm AS builder",
               "FROM debian:bookworm-slim"):
    check(needle in dockerfile, f"Dockerfile: missing {needle!r}")

# --- report ----------------------------------------------------------------

print(f"k8s documents checked: {len(docs)} from {k8s_source}")
print(f"compose services checked: {', '.join(sorted(services))}")
print(systemd_report)
if failures:
    print(f"\n{len(failures)} problem(s):")
    for f_ in failures:
        print(f"  - {f_}")
    sys.exit(1)
print("deploy kit: all checks passed")
