"""The mutation: the JSON patch that gives a Pod its audience token volume, mounts and env var.

The patch is built as explicit ``add`` operations, never by diffing whole objects: a diff costs
milliseconds per Pod and may replace or remove what other webhooks wrote. Each new volume, mount
and env var is one op; an array that the Pod does not have yet is created whole, because the
API server leaves empty arrays out of the JSON. The patch is idempotent by construction: what is
already there is not added again, which is what makes re-invocation (``reinvocationPolicy:
IfNeeded``) and a second look at an already-patched Pod yield nothing.

A Pod that asks for several audiences gets the same one volume and mount, with one token source
per file of ``Contract.token_files``, and a second env var (``dir_env_var``) next to the first: a
list of one audience is exactly the single-audience patch, op for op and byte for byte.
"""

from collections.abc import Container
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
    expiration = spec.expiration_seconds
    sources = []
    for audience, path in contract.token_files(spec.audiences):  # a loop: a comprehension costs more, per Pod
        sources.append({"serviceAccountToken": {"audience": audience, "expirationSeconds": expiration, "path": path}})
    return {"name": contract.volume_name, "projected": {"sources": sources}}


def plan_injection(
    pod: Json, spec: TokenSpec, *, contract: Contract, absent: Container[str] = frozenset()
) -> Injection:
    """The ``add`` ops that inject ``spec`` into ``pod``; raises ``Denied`` on a conflict.

    ``absent`` holds env var names known to occur nowhere in the Pod, so that its (often hundreds
    of) env entries need not be read to find them.
    """
    injection = Injection()
    if spec.skip_containers:
        _check_skipped_containers_exist(pod, spec, contract=contract)
    if not _has_token_volume(pod, spec, contract=contract):
        _add(injection, "/spec/volumes", array=pod["spec"].get("volumes"), value=token_volume(spec, contract))

    mount = {"name": contract.volume_name, "mountPath": contract.mount_path, "readOnly": True}
    # The env vars every container gets, in the order they are prepended, each with the suffix of
    # its add op; and whether any of them can be in the Pod at all (see ``absent``): most often
    # none can, and no env entry is read.
    path_var = {"name": contract.env_var, "value": contract.token_path}
    env, prepend = [path_var], [("/env/0", path_var)]
    look = contract.env_var not in absent
    if len(spec.audiences) > 1:
        dir_var = {"name": contract.dir_env_var, "value": contract.token_dir}
        env.append(dir_var)
        prepend.append(("/env/1", dir_var))
        look = look or contract.dir_env_var not in absent
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
        if variables is None:
            injection.ops.append({"op": "add", "path": f"{base}/env", "value": env})
            touched = True
        else:
            missing = (
                _positions(_missing_env(variables, env, absent, container=name, injection=injection))
                if look
                else prepend
            )
            # Prepended so that the container's own variables can refer to them as $(NAME):
            # Kubernetes expands only references to variables defined earlier in the list.
            for suffix, variable in missing:
                injection.ops.append({"op": "add", "path": base + suffix, "value": variable})
                touched = True
        if touched:
            injection.containers.append(name)
    return injection


def _positions(env: list[Json]) -> list[tuple[str, Json]]:
    return [(f"/env/{position}", variable) for position, variable in enumerate(env)]


def _missing_env(
    variables: list[object], env: list[Json], absent: Container[str], *, container: str, injection: Injection
) -> list[Json]:
    """Those of ``env`` that the container does not set; a warning for each it sets to its own value."""
    missing = []
    for variable in env:
        existing = None if variable["name"] in absent else _env_entry(variables, variable["name"])
        if existing is None:
            missing.append(variable)
        elif existing.get("value") != variable["value"] or "valueFrom" in existing:
            injection.warnings.append(_own_value_warning(container, variable, first=variable is env[0]))
    return missing


def _own_value_warning(container: str, variable: Json, *, first: bool) -> str:
    """The warning for a container that sets ``variable`` itself; the value shown is ours, never its."""
    where = f"the token is at {variable['value']}" if first else f"the token files are in {variable['value']}"
    return f"container {container!r} already sets {variable['name']}; its own value was kept, and {where}"


def _add(injection: Injection, path: str, *, array: list[Json] | None, value: Json) -> None:
    """Append ``value`` to the array at ``path``, or create the array if the Pod has none."""
    if array is None:
        injection.ops.append({"op": "add", "path": path, "value": [value]})
    else:
        injection.ops.append({"op": "add", "path": f"{path}/-", "value": value})


def _env_entry(variables: list[object] | None, name: str) -> Json | None:
    # Entries are not shape-checked (most reviews never read them): one that is not an object
    # with that name is not the one we look for, and the API server validates the Pod after us.
    return next((v for v in variables or () if isinstance(v, dict) and v.get("name") == name), None)


def _has_token_volume(pod: Json, spec: TokenSpec, *, contract: Contract) -> bool:
    existing = next((v for v in volumes_of(pod) if v["name"] == contract.volume_name), None)
    if existing is None:
        return False
    if _is_token_volume(existing, token_volume(spec, contract)):
        return True
    wanted = (
        f"{spec.audiences[0]!r} token"
        if len(spec.audiences) == 1
        else "token volume for " + ", ".join(map(repr, spec.audiences))
    )
    raise invalid(
        f"Pod already has a volume named {contract.volume_name!r} that is not the projected "
        f"{wanted} ({_describe_volume(existing)}); token-projector needs that name "
        "for the token volume: rename the Pod's volume"
    )


def _is_token_volume(existing: Json, volume: Json) -> bool:
    """True for ``volume`` as we add it, also after the API server defaulted fields into it."""
    projected = existing.get("projected")
    if set(existing) != {"name", "projected"} or not isinstance(projected, dict):
        return False
    sources = projected.get("sources")
    wanted = volume["projected"]["sources"]
    if not isinstance(sources, list) or len(sources) != len(wanted):
        return False
    for source, ours in zip(sources, wanted, strict=True):
        if not isinstance(source, dict) or set(source) != {"serviceAccountToken"}:
            return False
        token, want = source["serviceAccountToken"], ours["serviceAccountToken"]
        if not (
            isinstance(token, dict)
            and token.get("audience") == want["audience"]
            and token.get("path") == want["path"]
            and token.get("expirationSeconds", DEFAULT_EXPIRATION_SECONDS) == want["expirationSeconds"]
        ):
            return False
    return True


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
