"""deploy/: the compose file and the Kubernetes manifests, checked without docker or a cluster.

Every YAML file parses; the compose file validates against the Compose Specification's schema (the copy
check-jsonschema ships); the compose services, healthchecks and load balancer are what docs/operations.md
says; the Kubernetes manifests validate against the Kubernetes OpenAPI schemas (kubernetes-validate, which
ships them) and refer to each other correctly. Each gateway's config is loaded with Narrowgate's own
loaders from a copy of the files laid out as the container sees them: the compose binds over the image's
files, the ConfigMap volumes as the kubelet writes them (a timestamped directory behind `..data`).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from gateway.catalog import load_catalog
from gateway.config import Settings, load_settings
from gateway.policy.sources import read_files
from gateway.policy.testing import validate_policies_dir
from tests.support.processes import REPO

COMPOSE = REPO / "deploy" / "compose"
KUBERNETES = REPO / "deploy" / "kubernetes"
GATEWAYS = ("gateway-1", "gateway-2")
# 1.30 is the oldest release whose pods take `preStop: sleep` by default; the newest the package knows too.
KUBERNETES_VERSIONS = ("1.30", latest_version())
PLACEHOLDER = "CHANGE_ME"
SECRET_EXAMPLE = "secret.example.yaml"
POD_NAME = "narrowgate-5d8f7c9b4-x2k9q"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- compose ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE / "compose.yaml")


@pytest.fixture(scope="module")
def dotenv() -> dict[str, str]:
    """`.env.example`: the variables compose interpolates (as an operator's `.env` would set them)."""
    pairs = (line.split("=", 1) for line in (COMPOSE / ".env.example").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#"))
    return {name: value for name, value in pairs}


INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$`, failing on a variable left unset."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, word = match.groups()
        if variables.get(name):
            return variables[name]
        assert operator in (":-", "-"), f"${{{name}}} is not set in .env.example and has no default"
        return word
    return INTERPOLATION.sub(one, text)


def gateway_environment(compose: dict[str, Any], service: str, dotenv: Mapping[str, str]) -> dict[str, str]:
    environment = compose["services"][service]["environment"]
    return {name: interpolate(str(value), dotenv) for name, value in environment.items()}


def test_every_deploy_yaml_file_parses() -> None:
    files = sorted([*(REPO / "deploy").rglob("*.yaml"), *(REPO / "deploy").rglob("*.yml")])
    assert len(files) >= 12
    for path in files:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        assert documents and all(isinstance(d, dict) for d in documents), path


def test_the_compose_file_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendored.joinpath("compose-spec.json").read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert problems == []
    assert not validator.is_valid({**compose, "services": {**compose["services"], "lb": {
        **compose["services"]["lb"], "helthcheck": {}}}}), "the schema refuses an unknown key"


def test_compose_runs_two_gateways_behind_one_port_on_postgres_redis_and_a_collector(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {*GATEWAYS, "lb", "postgres", "redis", "otel-collector"}
    for name in GATEWAYS:
        gateway = services[name]
        assert gateway["build"]["context"] == "../.." and (COMPOSE / "../.." / gateway["build"]["dockerfile"]).is_file()
        assert gateway["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "ports" not in gateway, "only the load balancer is published"
        assert {"front", "back"} == set(gateway["networks"])
        assert gateway["read_only"] is True and gateway["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in gateway["security_opt"]
    assert {name: services["lb"]["depends_on"][name]["condition"] for name in GATEWAYS} == dict.fromkeys(
        GATEWAYS, "service_healthy")
    assert [p.rsplit(":", 1)[1] for p in services["lb"]["ports"]] == ["8080"]
    assert services["lb"]["networks"] == ["front"]
    for engine in ("postgres", "redis", "otel-collector"):
        assert services[engine]["networks"] == ["back"]
    for engine in ("postgres", "redis"):
        assert "ports" not in services[engine]


def test_compose_healthchecks_ask_healthz_on_the_listen_port(compose: dict[str, Any], dotenv: dict[str, str],
                                                             tmp_path: Path) -> None:
    for name in GATEWAYS:
        check = compose["services"][name]["healthcheck"]
        port = compose_settings(compose, name, dotenv, tmp_path / name).listen_port
        assert check["test"][0] == "CMD" and f"http://127.0.0.1:{port}/healthz" in " ".join(check["test"])
        assert check["start_period"] and check["interval"]
    assert "pg_isready" in compose["services"]["postgres"]["healthcheck"]["test"]
    assert "redis-cli ping" in " ".join(compose["services"]["redis"]["healthcheck"]["test"])


def test_compose_writes_no_password_and_takes_each_from_the_env_file(compose: dict[str, Any],
                                                                    dotenv: dict[str, str]) -> None:
    text = "\n".join(line for line in (COMPOSE / "compose.yaml").read_text(encoding="utf-8").splitlines()
                     if not line.lstrip().startswith("#"))
    used = {m.group(1) for m in INTERPOLATION.finditer(text) if m.group(1)}
    assert used <= set(dotenv), f"not in .env.example: {used - set(dotenv)}"
    secrets = {name for name in dotenv if name.endswith(("PASSWORD", "TOKEN"))}
    assert secrets == {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "OPS_ADMIN_TOKEN"}
    assert all(dotenv[name] == PLACEHOLDER for name in secrets)
    for name in secrets:  # required (`:?`): compose refuses to start while one is unset
        assert re.search(rf"\$\{{{name}:\?", text), name
    assert {s: v["environment"] for s, v in compose["secrets"].items()} == {
        "postgres_password": "POSTGRES_PASSWORD", "redis_password": "REDIS_PASSWORD"}
    postgres = compose["services"]["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert "/run/secrets/redis_password" in " ".join(compose["services"]["redis"]["command"])
    assert (COMPOSE / ".gitignore").read_text(encoding="utf-8").split("\n").count(".env") == 1
    assert "**/.env" in (REPO / ".dockerignore").read_text(encoding="utf-8").split("\n")


def copy_into(root: Path, source: Path, target: str) -> None:
    destination = root / target.lstrip("/")
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, destination, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, destination)


def image_files(root: Path) -> None:
    """What the Dockerfile copies under /etc/narrowgate (from the build context, not another stage)."""
    for line in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not parts[1].startswith("--") and parts[-1].startswith("/etc/narrowgate"):
            copy_into(root, REPO / parts[1], parts[-1])


def compose_settings(compose: dict[str, Any], service: str, dotenv: Mapping[str, str], root: Path) -> Settings:
    """The replica's settings, loaded from its filesystem as compose lays it out: the image, then the binds."""
    image_files(root)
    for volume in compose["services"][service]["volumes"]:
        source, target, *_ = volume.split(":")
        copy_into(root, COMPOSE / source, target)
    return load_in(root, Path("/etc/narrowgate/config.yaml"), gateway_environment(compose, service, dotenv))


def load_in(root: Path, config: Path, environ: Mapping[str, str]) -> Settings:
    """load_settings on the config at `config` inside `root`, with the config's absolute paths kept inside it."""
    settings = load_settings(root / config.relative_to("/"), environ)
    for path in (settings.catalog_dir, settings.policies_dir):
        assert path.is_absolute() and not path.is_relative_to(root), f"{path}: give the container's absolute path"
    return settings


def inside(root: Path, path: Path) -> Path:
    return root / path.relative_to("/")


def test_each_compose_replica_loads_its_config_catalog_and_policies(compose: dict[str, Any], dotenv: dict[str, str],
                                                                    tmp_path: Path) -> None:
    postgres = compose["services"]["postgres"]["environment"]
    for name in GATEWAYS:
        root = tmp_path / name
        settings = compose_settings(compose, name, dotenv, root)
        state = urlsplit(settings.state)
        assert state.scheme == "postgresql" and (state.hostname, state.port) == ("postgres", 5432)
        assert (state.username, state.password) == (postgres["POSTGRES_USER"], dotenv["POSTGRES_PASSWORD"])
        assert state.path == f"/{postgres['POSTGRES_DB']}"
        redis = urlsplit(settings.cluster.redis_url or "")
        assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
        assert redis.password == dotenv["REDIS_PASSWORD"]
        assert settings.cluster.key_prefix == "narrowgate" and settings.cluster.replica_id == name
        assert settings.workers == 1
        assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", 8080)
        assert settings.public_url == dotenv["NARROWGATE_PUBLIC_URL"]
        assert [(t.name, t.token) for t in settings.admin.tokens] == [("ops", dotenv["OPS_ADMIN_TOKEN"])]
        catalog = load_catalog(inside(root, settings.catalog_dir))
        assert catalog.tools
        assert validate_policies_dir(inside(root, settings.policies_dir), catalog) == []


def test_compose_gateways_export_to_the_collector(compose: dict[str, Any], dotenv: dict[str, str]) -> None:
    collector = load_yaml(COMPOSE / "otel-collector.yaml")
    http_port = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]
    for name in GATEWAYS:
        environment = gateway_environment(compose, name, dotenv)
        assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otel-collector:{http_port}"
        assert environment["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert f"service.instance.id={name}" in environment["OTEL_RESOURCE_ATTRIBUTES"]
    mounted = {v.split(":")[1] for v in compose["services"]["otel-collector"]["volumes"]}
    assert "/etc/otelcol-contrib/config.yaml" in mounted
    for pipeline in collector["service"]["pipelines"].values():
        assert set(pipeline["receivers"]) <= set(collector["receivers"])
        assert set(pipeline["exporters"]) <= set(collector["exporters"])
        assert set(pipeline["processors"]) <= set(collector["processors"])


def test_the_load_balancer_round_robins_over_both_replicas_without_stickiness(compose: dict[str, Any]) -> None:
    text = (COMPOSE / "haproxy.cfg").read_text(encoding="utf-8")
    lines = [words for words in (line.split("#", 1)[0].split() for line in text.splitlines()) if words]
    servers = {line[1]: line[2] for line in lines if line[0] == "server"}
    assert servers == {name: f"{name}:8080" for name in GATEWAYS}
    assert ["balance", "roundrobin"] in lines
    assert ["option", "httpchk", "GET", "/healthz"] in lines
    assert not [line for line in lines if line[0] in ("cookie", "stick", "stick-table", "hash-type")]
    assert ["bind", ":8080"] in lines
    mounted = {v.split(":")[1] for v in compose["services"]["lb"]["volumes"]}
    assert mounted == {"/usr/local/etc/haproxy/haproxy.cfg"}


# --- Kubernetes ---------------------------------------------------------------------------------------


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                yield path, document


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path, document in manifests():
        key = (document["kind"], document["metadata"]["name"])
        assert key not in found, f"{path}: {key} defined twice"
        found[key] = document
    return found


@pytest.fixture(scope="module")
def deployment(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return objects["Deployment", "narrowgate"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [gateway] = deployment["spec"]["template"]["spec"]["containers"]
    return gateway


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(version: str) -> None:
    checked = 0
    for path, document in manifests():
        try:  # strict: an unknown field (a typo) fails too; a kind without a schema fails too
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {'.'.join(map(str, exc.path))}: {exc.message}")
        checked += 1
    assert checked == 8


def test_the_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = load_yaml(KUBERNETES / "kustomization.yaml")
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml", SECRET_EXAMPLE}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert [image["name"] for image in kustomization["images"]] == [container_image_name()]


def container_image_name() -> str:
    return str(container(load_yaml(KUBERNETES / "deployment.yaml"))["image"]).split(":")[0]


def test_service_and_budget_select_the_deployments_pods(objects: dict[tuple[str, str], dict[str, Any]],
                                                       deployment: dict[str, Any]) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert deployment["spec"]["replicas"] >= 2
    service = objects["Service", "narrowgate"]["spec"]
    assert service["selector"] == selector and service["sessionAffinity"] == "None"
    budget = objects["PodDisruptionBudget", "narrowgate"]["spec"]
    assert budget["selector"]["matchLabels"] == selector and budget["minAvailable"] == 1
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert [p["targetPort"] for p in service["ports"]] == ["http"] and "http" in ports
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_probes_ask_healthz_on_the_port_the_gateway_listens_on(deployment: dict[str, Any], tmp_path: Path) -> None:
    gateway = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    listen_port = pod_settings(deployment, load_configmaps(), tmp_path).listen_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = gateway[probe]["httpGet"]
        assert check["path"] == "/healthz", probe
        assert ports[check["port"]] == listen_port, probe


def test_the_pod_runs_unprivileged_on_a_read_only_root_with_bounded_resources(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    gateway = container(deployment)
    security = gateway["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert set(gateway["resources"][kind]) == {"cpu", "memory"}
    # One process uses one core at most (docs/operations.md#sizing): more than one CPU per pod is waste.
    assert gateway["resources"]["limits"]["cpu"] == "1"


def test_everything_the_pod_refers_to_exists(objects: dict[tuple[str, str], dict[str, Any]],
                                             deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert ("ServiceAccount", pod["serviceAccountName"]) in objects
    secret = load_yaml(KUBERNETES / SECRET_EXAMPLE)
    env = container(deployment)["env"]
    for variable in env:
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        if reference:
            assert reference["name"] == secret["metadata"]["name"] and reference["key"] in secret["stringData"]
    defined: list[str] = []
    for variable in env:  # $(NAME) expands only names defined earlier in the list
        for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", variable.get("value", "")):
            assert name in defined, f"{variable['name']} uses $({name}) before it is defined"
        defined.append(variable["name"])
    mounted = {m["name"] for m in container(deployment)["volumeMounts"]}
    assert mounted == {v["name"] for v in pod["volumes"]}
    for volume in pod["volumes"]:
        if "configMap" in volume:
            data = objects["ConfigMap", volume["configMap"]["name"]]["data"]
            items = volume["configMap"].get("items")
            if items:  # a key left out of `items` is silently not mounted
                assert sorted(i["key"] for i in items) == sorted(data), volume["name"]


def test_secrets_come_only_from_the_secret_and_its_example_holds_placeholders(deployment: dict[str, Any]) -> None:
    env = {v["name"]: v for v in container(deployment)["env"]}
    for name in ("NARROWGATE_STATE", "NARROWGATE_CLUSTER__REDIS_URL", "OPS_ADMIN_TOKEN"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"], name
    for variable in env.values():
        assert not re.search(r"://[^/@\s]*:[^/@\s]*@", variable.get("value", "")), variable["name"]
    secret = load_yaml(KUBERNETES / SECRET_EXAMPLE)
    assert all(PLACEHOLDER in value for value in secret["stringData"].values())
    assert "data" not in secret


def write_like_kubelet(mount: Path, files: Mapping[str, str], stamp: str) -> None:
    """A ConfigMap volume as the kubelet writes it: files in a timestamped directory, `..data` pointing at it,
    and a symlink for each top-level name (so `policies/` is a link to `..data/policies`)."""
    for relative, text in files.items():
        target = mount / stamp / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    (mount / "..data").symlink_to(stamp)
    for top in {relative.split("/")[0] for relative in files}:
        (mount / top).symlink_to(f"..data/{top}")


def load_configmaps() -> dict[str, dict[str, str]]:
    return {doc["metadata"]["name"]: doc["data"] for _, doc in manifests() if doc["kind"] == "ConfigMap"}


def pod_environment(deployment: dict[str, Any]) -> dict[str, str]:
    """The container's environment with the example Secret's values and the downward API filled in."""
    secret = load_yaml(KUBERNETES / SECRET_EXAMPLE)["stringData"]
    fields = {"metadata.name": POD_NAME, "metadata.namespace": "narrowgate"}
    environ: dict[str, str] = {}
    for variable in container(deployment)["env"]:
        source = variable.get("valueFrom", {})
        if "secretKeyRef" in source:
            environ[variable["name"]] = secret[source["secretKeyRef"]["key"]]
        elif "fieldRef" in source:
            environ[variable["name"]] = fields[source["fieldRef"]["fieldPath"]]
        else:
            environ[variable["name"]] = variable["value"]
    return environ


def pod_settings(deployment: dict[str, Any], configmaps: Mapping[str, Mapping[str, str]], root: Path,
                 stamp: str = "..2026_12_06_11_00_00.123456789") -> Settings:
    """The pod's settings, loaded from its ConfigMap volumes laid out as the kubelet lays them out."""
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v["configMap"] for v in pod["volumes"] if "configMap" in v}
    for mount in container(deployment)["volumeMounts"]:
        if mount["name"] in volumes:
            source = volumes[mount["name"]]
            data = configmaps[source["name"]]
            files = {i["path"]: data[i["key"]] for i in source["items"]} if "items" in source else dict(data)
            write_like_kubelet(inside(root, Path(mount["mountPath"])), files, stamp)
    args = container(deployment)["args"]
    return load_in(root, Path(args[args.index("--config") + 1]), pod_environment(deployment))


def test_the_pod_loads_its_config_catalog_and_policies_from_the_configmaps(deployment: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    configmaps = load_configmaps()
    settings = pod_settings(deployment, configmaps, tmp_path)
    assert settings.state == load_yaml(KUBERNETES / SECRET_EXAMPLE)["stringData"]["state-url"]
    assert urlsplit(settings.state).scheme == "postgresql"
    assert urlsplit(settings.cluster.redis_url or "").scheme == "redis"
    assert settings.cluster.replica_id == POD_NAME and settings.cluster.key_prefix == "narrowgate"
    assert settings.workers == 1 and settings.listen_host == "0.0.0.0"
    assert [(t.name, t.token) for t in settings.admin.tokens] == [("ops", PLACEHOLDER)]
    mounts = {m["mountPath"] for m in container(deployment)["volumeMounts"] if m.get("readOnly")}
    assert {str(settings.catalog_dir), str(settings.policies_dir)} <= mounts
    catalog = load_catalog(inside(tmp_path, settings.catalog_dir))
    assert sorted(catalog.tools) == ["tickets__create_ticket", "tickets__list_tickets"]
    policies = inside(tmp_path, settings.policies_dir)
    assert validate_policies_dir(policies, catalog) == []
    problems: list[str] = []
    files = read_files(policies, problems)
    assert problems == [] and files is not None
    cedar_keys = [key for key in configmaps["narrowgate-policies"] if key.endswith(".cedar")]
    assert len(files.policy_files) == len(cedar_keys), "each policy file is read once"


def test_replicas_agree_on_the_policy_files_whatever_the_kubelets_timestamp(deployment: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    configmaps = load_configmaps()
    digests = set()
    for stamp in ("..2026_12_06_11_00_00.123456789", "..2026_12_07_09_30_00.987654321"):
        root = tmp_path / stamp.strip(".")
        settings = pod_settings(deployment, configmaps, root, stamp)
        files = read_files(inside(root, settings.policies_dir), [])
        assert files is not None
        digests.add(files.digest)
    assert len(digests) == 1


def test_policy_files_in_hidden_directories_are_not_read(tmp_path: Path) -> None:
    """A ConfigMap mounted straight at policies/ keeps a hidden timestamped copy of every file beside them."""
    policies = tmp_path / "cedar"
    shutil.copytree(REPO / "cedar", policies)
    before = read_files(policies, [])
    copy = policies / "policies" / "..2026_12_06_11_00_00.1"
    shutil.copytree(REPO / "cedar" / "policies", copy)
    (policies / "policies" / ".hidden.cedar").write_text("permit(principal, action, resource);")
    after = read_files(policies, [])
    assert before is not None and after is not None
    assert after.policy_files == before.policy_files and after.digest == before.digest
