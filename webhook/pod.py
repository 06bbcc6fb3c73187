"""The few Pod fields token-projector reads, with their JSON types checked once.

The API server only ever sends well-formed Pods, but the same core answers hand-written files
(``token-projector review``) and anything posted to the server. Checking the shape of what we
read in one pass keeps the policy and mutation code free of type checks, and turns a malformed
body into an ``InvalidReview`` that names the field, never into a crash. The one exception is
a container's env entries: most reviews never read them (see ``webhook.document``), so they are
not checked here, and the code that does read them passes over an entry it cannot use.
"""

from collections.abc import Iterator
from typing import Any, Literal

from webhook.errors import InvalidReview
from webhook.wire import Json

ContainerKind = Literal["initContainers", "containers"]
CONTAINER_KINDS: tuple[ContainerKind, ...] = ("initContainers", "containers")
"""Init containers first: native sidecars (restartPolicy: Always) live there and need the token too."""
_METADATA_STRINGS = ("name", "generateName", "namespace")
_SPEC_STRINGS = ("serviceAccountName", "serviceAccount")


def check_shape(pod: object, where: str = "request.object") -> Json:
    """Return ``pod`` once every field the core reads has the JSON type it must have.

    Every Pod the API server sends is well-formed, so a fast pass answers only yes or no; the walk
    that names the bad field runs only when it says no. (A property test keeps the two in agreement.)
    """
    if well_formed(pod):
        return pod  # type: ignore[return-value]
    return explain_shape(pod, where)


def well_formed(pod: object) -> bool:
    """The fast pass of ``check_shape``: the same rules, no messages, no calls per field.

    Plain loops and ``type(...) is`` checks on purpose: this runs for every Pod, and generator
    expressions and ``isinstance`` with unions cost several times as much (JSON decodes to exact
    types, never to subclasses).
    """
    if type(pod) is not dict:
        return False
    metadata = pod.get("metadata")
    if metadata is not None:
        if type(metadata) is not dict:
            return False
        annotations = metadata.get("annotations")
        if annotations is not None:
            if type(annotations) is not dict:
                return False
            for value in annotations.values():
                if type(value) is not str:
                    return False
        if not _strings_where_set(metadata, _METADATA_STRINGS):
            return False
    spec = pod.get("spec")
    if type(spec) is not dict or not _strings_where_set(spec, _SPEC_STRINGS):
        return False
    volumes = spec.get("volumes")
    if volumes is not None:
        if type(volumes) is not list:
            return False
        for volume in volumes:
            if type(volume) is not dict or type(volume.get("name")) is not str:
                return False
    for kind in CONTAINER_KINDS:
        containers = spec.get(kind)
        if containers is None:
            continue
        if type(containers) is not list:
            return False
        for c in containers:
            if type(c) is not dict or type(c.get("name")) is not str:
                return False
            mounts = c.get("volumeMounts")
            if mounts is not None:
                if type(mounts) is not list:
                    return False
                for m in mounts:
                    if type(m) is not dict or type(m.get("name")) is not str or type(m.get("mountPath")) is not str:
                        return False
            env = c.get("env")
            if env is not None and type(env) is not list:
                return False
    return True


def _strings_where_set(obj: dict[str, Any], keys: tuple[str, ...]) -> bool:
    for key in keys:
        value = obj.get(key)
        if value is not None and type(value) is not str:
            return False
    return True


def explain_shape(pod: object, where: str = "request.object") -> Json:
    """The slow pass of ``check_shape``: raises ``InvalidReview`` naming the first bad field."""
    obj = _object(pod, where)
    metadata = _optional_object(obj, "metadata", where=where)
    if metadata is not None:
        annotations = _optional_object(metadata, "annotations", where=f"{where}.metadata")
        if annotations is not None:
            for key, value in annotations.items():
                if not isinstance(value, str):
                    raise InvalidReview(f"{where}.metadata.annotations[{key!r}] must be a string, got {_kind(value)}")
        for key in _METADATA_STRINGS:
            _optional_string(metadata, key, where=f"{where}.metadata")
    spec = _object(obj.get("spec"), f"{where}.spec")
    for key in _SPEC_STRINGS:
        _optional_string(spec, key, where=f"{where}.spec")
    for i, volume in enumerate(_optional_list(spec, "volumes", where=f"{where}.spec")):
        at = f"{where}.spec.volumes[{i}]"
        _string(_object(volume, at), "name", where=at)
    for kind in CONTAINER_KINDS:
        for i, container in enumerate(_optional_list(spec, kind, where=f"{where}.spec")):
            at = f"{where}.spec.{kind}[{i}]"
            _string(_object(container, at), "name", where=at)
            for j, mount in enumerate(_optional_list(container, "volumeMounts", where=at)):
                _string(_object(mount, f"{at}.volumeMounts[{j}]"), "name", where=f"{at}.volumeMounts[{j}]")
                _string(mount, "mountPath", where=f"{at}.volumeMounts[{j}]")
            _optional_list(container, "env", where=at)  # its entries: see mutation._env_entry
    return obj


def annotations_of(pod: Json) -> dict[str, str]:
    return ((pod.get("metadata") or {}).get("annotations")) or {}


def volumes_of(pod: Json) -> list[Json]:
    return pod["spec"].get("volumes") or []


def containers_of(pod: Json) -> Iterator[tuple[ContainerKind, int, Json]]:
    """Every container and init container, with the kind and index its JSON patch path needs."""
    spec = pod["spec"]
    for kind in CONTAINER_KINDS:
        for index, container in enumerate(spec.get(kind) or ()):
            yield kind, index, container


def display_name(pod: Json) -> str:
    """The Pod's name for messages and logs; a Deployment's Pod only has ``generateName`` yet."""
    metadata = pod.get("metadata") or {}
    name = metadata.get("name")
    if name:
        return str(name)
    return f"{metadata.get('generateName') or ''}<generated>"


def service_account_of(pod: Json) -> str:
    spec = pod["spec"]
    return spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"


def same_path(a: str, b: str) -> bool:
    """Mount paths that differ only by trailing slashes are the same place."""
    return a.rstrip("/") == b.rstrip("/")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _object(value: object, where: str) -> Json:
    if not isinstance(value, dict):
        raise InvalidReview(f"{where} must be an object, got {_kind(value)}")
    return value


def _optional_object(parent: Json, key: str, *, where: str) -> Json | None:
    value = parent.get(key)
    return None if value is None else _object(value, f"{where}.{key}")


def _optional_list(parent: Json, key: str, *, where: str) -> list[Any]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidReview(f"{where}.{key} must be a list, got {_kind(value)}")
    return value


def _string(parent: Json, key: str, *, where: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str):
        raise InvalidReview(f"{where}.{key} must be a string, got {_kind(value)}")
    return value


def _optional_string(parent: Json, key: str, *, where: str) -> None:
    value = parent.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidReview(f"{where}.{key} must be a string, got {_kind(value)}")
