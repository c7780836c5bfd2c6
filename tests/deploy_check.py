#!/usr/bin/python3
"""Checks the deployment files with what this machine has (no Docker engine, no cluster).

- promtool: every Prometheus config (with its rule files) and the alert rules.
- Every YAML under deploy/ parses; Kubernetes documents have apiVersion, kind and metadata.name;
  the compose file's volumes and bind mounts point at files that exist.
- The Grafana dashboard parses, and every weightcast metric it or the alert rules query is a
  metric family on a live weightcastd's /metrics.
- The Dockerfile's build stage runs exactly scripts/setup and scripts/build (what CI runs); this
  check runs that very command line in the source tree (a no-op rebuild when CI has built), its
  targets are what the runtime stage copies, those binaries exist afterwards, and its HEALTHCHECK
  command answers 0 against the live server.
usage: deploy_check.py SOURCE_DIR BUILD_DIR WORK_DIR
"""
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import server_process  # noqa: E402


def check_prometheus(deploy):
    for config in sorted(glob.glob(os.path.join(deploy, "prometheus", "prometheus*.yml"))):
        subprocess.run(["promtool", "check", "config", config], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["promtool", "check", "rules", os.path.join(deploy, "prometheus", "alerts.yml")], check=True,
                   stdout=subprocess.DEVNULL)


def check_yaml(deploy):
    files = sorted(glob.glob(os.path.join(deploy, "**", "*.y*ml"), recursive=True))
    assert files, "no YAML under deploy/"
    for path in files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        assert docs, f"{path}: empty"
        if "/k8s/" in path:
            for d in docs:
                assert d.get("apiVersion") and d.get("kind"), f"{path}: a document without apiVersion/kind"
                assert d["kind"] == "Kustomization" or d.get("metadata", {}).get("name"), f"{path}: no metadata.name"
        if path.endswith("docker-compose.yml"):
            compose = docs[0]
            assert {"weightcast", "prometheus", "grafana"} <= set(compose["services"]), path
            for service in compose["services"].values():
                for volume in service.get("volumes", []):
                    source = volume.split(":")[0]
                    if source.startswith("."):
                        assert os.path.exists(os.path.join(os.path.dirname(path), source)), f"{path}: {source} missing"
    kustomization = yaml.safe_load(open(os.path.join(deploy, "k8s", "kustomization.yaml")))
    for resource in kustomization["resources"]:
        assert os.path.exists(os.path.join(deploy, "k8s", resource)), resource
    return len(files)


def check_nginx(deploy, work):
    """The blob cache's config: the Kubernetes ConfigMap carries deploy/nginx/blobs.conf verbatim,
    and nginx accepts it (its upstream name and paths swapped for ones that exist here)."""
    conf = open(os.path.join(deploy, "nginx", "blobs.conf")).read()
    docs = list(yaml.safe_load_all(open(os.path.join(deploy, "k8s", "blob-cache.yaml"))))
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config_map["data"]["blobs.conf"] == conf, "blob-cache.yaml's blobs.conf differs from deploy/nginx"
    root = os.path.join(work, "nginx-check")
    os.makedirs(root, exist_ok=True)
    local = (conf.replace("http://weightcast:8080", "http://127.0.0.1:8080")
             .replace("/var/cache/nginx/blobs", os.path.join(root, "cache"))
             .replace("/var/log/nginx/access.log", os.path.join(root, "access.log")))
    with open(os.path.join(root, "blobs.conf"), "w") as f:
        f.write(local)
    with open(os.path.join(root, "nginx.conf"), "w") as f:
        f.write(f"pid {root}/nginx.pid;\nerror_log {root}/error.log;\nevents {{}}\nhttp {{\n"
                + "".join(f"  {t}_temp_path {root}/{t};\n" for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
                + f"  include {root}/blobs.conf;\n}}\n")
    subprocess.run(["nginx", "-t", "-q", "-p", root, "-c", os.path.join(root, "nginx.conf")], check=True)


def queried_metrics(deploy):
    with open(os.path.join(deploy, "grafana", "weightcast-dashboard.json")) as f:
        dashboard = json.load(f)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    with open(os.path.join(deploy, "prometheus", "alerts.yml")) as f:
        exprs += [r["expr"] for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
    return {m for e in exprs for m in re.findall(r"weightcast_[a-z0-9_]+", e)}


def families(exposition):
    return set(re.findall(r"^# TYPE (\S+) ", exposition, re.M))


def check_dockerfile(source):
    with open(os.path.join(source, "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    build_stage = next(s for s in stages if re.match(r"\S+ AS build", s))
    runs = re.findall(r"^RUN (.+)$", build_stage, re.M)
    assert len(runs) == 1, f"the build stage must RUN one command, has {runs}"
    steps = [shlex.split(step) for step in runs[0].split("&&")]
    assert steps[0] == ["scripts/setup"], steps
    assert steps[1][0] == "scripts/build" and len(steps) == 2, steps
    targets = steps[1][1:]
    # The image recipe, run here: the same scripts, the same arguments.
    subprocess.run(runs[0], shell=True, cwd=source, check=True, stdout=subprocess.DEVNULL)
    copies = re.findall(r"^COPY --from=build (.+) \S+$", text, re.M)
    copied = [p for line in copies for p in line.split()]
    assert sorted(os.path.basename(p) for p in copied) == sorted(targets), (copied, targets)
    for path in copied:
        built = os.path.join(source, os.path.relpath(path, "/src"))
        assert os.access(built, os.X_OK), f"{built}: the image copies it, this build does not have it"
    health = re.search(r"^HEALTHCHECK .* CMD (\[.+\])$", text, re.M)
    assert health, "no HEALTHCHECK"
    return json.loads(health.group(1)), targets


def main():
    source, build, work = sys.argv[1:4]
    deploy = os.path.join(source, "deploy")
    check_prometheus(deploy)
    yaml_files = check_yaml(deploy)
    health, targets = check_dockerfile(source)

    shutil.rmtree(work, ignore_errors=True)
    check_nginx(deploy, work)
    server = server_process.Weightcastd(build, os.path.join(work, "data"))
    try:
        address, metrics_url = server.address, server.metrics_url
        exposition = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
        missing = sorted(m for m in queried_metrics(deploy)
                         if m not in families(exposition) and re.sub(r"_(bucket|sum|count)$", "", m) not in families(exposition))
        assert not missing, f"queried but not exported: {missing}"
        # The image's health check, with the address it would use swapped for this server's.
        command = [os.path.join(build, "client", health[0])] + health[1:]
        command[command.index("--server") + 1] = address
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    finally:
        server.stop()
    print(f"promtool: configs and rules pass; {yaml_files} YAML files parse; "
          f"{len(queried_metrics(deploy))} queried metrics all exported; the Dockerfile's build stage "
          f"({' && '.join(s for s in ['scripts/setup', 'scripts/build ' + ' '.join(targets)])}) ran and built "
          f"what the image copies; its health check passes; nginx accepts the blob cache config")


if __name__ == "__main__":
    main()
