"""The mutation: the JSON patch that gives a Pod its audience token volume, mounts and env var.

The patch is built as explicit ``add`` operations, never by diffing whole objects: a diff costs
milliseconds per Pod and may replace or remove what other webhooks wrote. Each new volume, mount
and env var is one op; an array that the Pod does not have yet is created whole, because the
API server leaves empty arrays out of the JSON. The patch is idempotent by construction: what is
already there is not added again, which is what makes re-invocation (``reinvocationPolicy:
IfNeeded``) and a second look at an already-patched Pod yield nothing.
"""

from dataclasses import dataclass, field

from webhook.core.annotations import TokenSpec
from webhook.core.contract import SKIP_CONTAINERS_KEY, Contract
from webhook.core.kubernetes import DEFAULT_EXPIRATION_SECONDS
from webhook.core.messages import invalid, shown
from webhook.core.pod import containers_of, token_sources, volumes_of
from webhook.core.wire import AddOp, Json


@dataclass(slots=True, kw_only=True)
class Injection:
    """The patch for one Pod and what it did, for the response's warnings and audit annotation.

    Not frozen: it is filled in as the Pod is walked (its lists are mutable anyway), and a frozen
    dataclass costs half a micro-second more to build, once per request.
    """

    ops: list[AddOp] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    """Names of the containers that got a mount or the env var from this patch."""


def token_volume(spec: TokenSpec, contract: Contract) -> Json:
    """The projected volume for ``spec``, as it is added to the Pod."""
    return {
        "name": contract.volume_name,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": spec.audience,
                        "expirationSeconds": spec.expiration_seconds,
                        "path": contract.token_file,
                    }
                }
            ]
        },
    }


def plan_injection(pod: Json, spec: TokenSpec, *, contract: Contract, env_var_absent: bool = False) -> Injection:
    """The ``add`` ops that inject ``spec`` into ``pod``; raises ``Denied`` on a conflict.

    ``env_var_absent`` says the env var's name occurs nowhere in the Pod, so that its (often
    hundreds of) env entries need not be read to find it.
    """
    injection = Injection()
    if spec.skip_containers:
        _check_skipped_containers_exist(pod, spec, contract=contract)
    if not _has_token_volume(pod, spec, contract=contract):
        _add(injection, "/spec/volumes", array=pod["spec"].get("volumes"), value=token_volume(spec, contract))

    mount = {"name": contract.volume_name, "mountPath": contract.mount_path, "readOnly": True}
    env = {"name": contract.env_var, "value": contract.token_path}
    mount_path = contract.mount_path.rstrip("/")  # see same_path; stripped once, not per mount
    for kind, index, container in containers_of(pod):
        name = container["name"]
        if name in spec.skip_containers:
            continue
        base = f"/spec/{kind}/{index}"
        touched = False
        mounts = container.get("volumeMounts")
        if mounts is None or not _has_token_mount(mounts, name, mount_path=mount_path, contract=contract):
            _add(injection, f"{base}/volumeMounts", array=mounts, value=mount)
            touched = True
        variables = container.get("env")
        existing = None if env_var_absent else _env_entry(variables, contract.env_var)
        if existing is None:
            # Prepended so that the container's own variables can refer to it as $(NAME):
            # Kubernetes expands only references to variables defined earlier in the list.
            _add(injection, f"{base}/env", array=variables, value=env, first=True)
            touched = True
        elif existing.get("value") != contract.token_path or "valueFrom" in existing:
            injection.warnings.append(
                f"container {name!r} already sets {contract.env_var}; its own value was kept, "
                f"and the token is at {contract.token_path}"
            )
        if touched:
            injection.containers.append(name)
    return injection


def _add(injection: Injection, path: str, *, array: list[Json] | None, value: Json, first: bool = False) -> None:
    if array is None:
        injection.ops.append({"op": "add", "path": path, "value": [value]})
    else:
        injection.ops.append({"op": "add", "path": f"{path}/{'0' if first else '-'}", "value": value})


def _env_entry(variables: list[object] | None, name: str) -> Json | None:
    # Entries are not shape-checked (most reviews never read them): one that is not an object
    # with that name is not the one we look for, and the API server validates the Pod after us.
    return next((v for v in variables or () if isinstance(v, dict) and v.get("name") == name), None)


def _has_token_volume(pod: Json, spec: TokenSpec, *, contract: Contract) -> bool:
    existing = next((v for v in volumes_of(pod) if v["name"] == contract.volume_name), None)
    if existing is None:
        return False
    if _is_token_volume(existing, spec, contract=contract):
        return True
    raise invalid(
        f"Pod already has a volume named {contract.volume_name!r} that is not the projected "
        f"{spec.audience!r} token ({_describe_volume(existing)}); token-projector needs that name "
        "for the token volume: rename the Pod's volume"
    )


def _is_token_volume(volume: Json, spec: TokenSpec, *, contract: Contract) -> bool:
    """True for our volume as we add it, also after the API server defaulted fields into it."""
    projected = volume.get("projected")
    if set(volume) != {"name", "projected"} or not isinstance(projected, dict):
        return False
    sources = projected.get("sources")
    if not isinstance(sources, list) or len(sources) != 1 or not isinstance(sources[0], dict):
        return False
    tokens = token_sources(volume)
    return (
        set(sources[0]) == {"serviceAccountToken"}
        and len(tokens) == 1
        and tokens[0].get("audience") == spec.audience
        and tokens[0].get("path") == contract.token_file
        and tokens[0].get("expirationSeconds", DEFAULT_EXPIRATION_SECONDS) == spec.expiration_seconds
    )


def _describe_volume(volume: Json) -> str:
    kinds = sorted(key for key in volume if key != "name")
    audiences = [token.get("audience") for token in token_sources(volume)]
    if kinds == ["projected"] and audiences:
        return "a projected token volume for audience " + ", ".join(repr(a or "") for a in audiences)
    return f"a {' / '.join(kinds) or 'empty'} volume"


def _has_token_mount(mounts: list[Json], container: str, *, mount_path: str, contract: Contract) -> bool:
    for mount in mounts:
        if mount["mountPath"].rstrip("/") == mount_path:
            if mount["name"] == contract.volume_name:
                return True
            raise invalid(
                f"container {container!r} already mounts volume {mount['name']!r} at {mount['mountPath']}, "
                f"where token-projector mounts the token; move that mount, or leave this container out with "
                f"the annotation {contract.annotation(SKIP_CONTAINERS_KEY)}: {container}"
            )
    return False


def _check_skipped_containers_exist(pod: Json, spec: TokenSpec, *, contract: Contract) -> None:
    names = [container["name"] for _, _, container in containers_of(pod)]
    unknown = sorted(spec.skip_containers.difference(names))
    if unknown:
        raise invalid(
            f"annotation {contract.annotation(SKIP_CONTAINERS_KEY)} names "
            f"{shown(', '.join(unknown))}, which the Pod does not have; its containers are "
            f"{', '.join(map(repr, names)) or 'none'}"
        )
