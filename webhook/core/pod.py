"""The few Pod fields token-projector reads, with their JSON types checked once.

The API server only ever sends well-formed Pods, but the same core answers hand-written files
(``token-projector review``) and anything posted to the server. Checking the shape of what we
read in one pass keeps the policy and mutation code free of type checks, and turns a malformed
body into an ``InvalidReview`` that names the field, never into a crash. The one exception is
a container's env entries: most reviews never read them (see ``webhook.document``), so they are
not checked here, and the code that does read them passes over an entry it cannot use.
"""

from collections.abc import Iterator
from typing import Literal

from webhook.core.messages import kind_of
from webhook.core.wire import Json
from webhook.errors import InvalidReview

ContainerKind = Literal["initContainers", "containers"]
CONTAINER_KINDS: tuple[ContainerKind, ...] = ("initContainers", "containers")
"""Init containers first: native sidecars (restartPolicy: Always) live there and need the token too."""
_METADATA_STRINGS = ("name", "generateName", "namespace")
_SPEC_STRINGS = ("serviceAccountName", "serviceAccount")


def check_shape(pod: object, where: str = "request.object") -> Json:
    """Return ``pod`` once every field the core reads has the JSON type it must have.

    One pass, written for the Pod that is well-formed (every Pod the API server sends is): plain
    loops and ``type(...) is`` checks, because this runs for every Pod and generator expressions and
    ``isinstance`` with unions cost several times as much (JSON decodes to exact types, never to
    subclasses). The message, and the path it names, is built only on the way out with an error.
    """
    if type(pod) is not dict:
        raise _wrong(where, "an object", pod)
    metadata = pod.get("metadata")
    if metadata is not None:
        if type(metadata) is not dict:
            raise _wrong(f"{where}.metadata", "an object", metadata)
        annotations = metadata.get("annotations")
        if annotations is not None:
            if type(annotations) is not dict:
                raise _wrong(f"{where}.metadata.annotations", "an object", annotations)
            for key, value in annotations.items():
                if type(value) is not str:
                    raise _wrong(f"{where}.metadata.annotations[{key!r}]", "a string", value)
        _strings_where_set(metadata, _METADATA_STRINGS, where=f"{where}.metadata")
    spec = pod.get("spec")
    if type(spec) is not dict:
        raise _wrong(f"{where}.spec", "an object", spec)
    _strings_where_set(spec, _SPEC_STRINGS, where=f"{where}.spec")
    volumes = spec.get("volumes")
    if volumes is not None:
        if type(volumes) is not list:
            raise _wrong(f"{where}.spec.volumes", "a list", volumes)
        for i, volume in enumerate(volumes):
            if type(volume) is not dict or type(volume.get("name")) is not str:
                _named_object(volume, f"{where}.spec.volumes[{i}]")
    for kind in CONTAINER_KINDS:
        containers = spec.get(kind)
        if containers is None:
            continue
        if type(containers) is not list:
            raise _wrong(f"{where}.spec.{kind}", "a list", containers)
        for i, c in enumerate(containers):
            if type(c) is not dict or type(c.get("name")) is not str:
                _named_object(c, f"{where}.spec.{kind}[{i}]")
            mounts = c.get("volumeMounts")
            if mounts is not None:
                if type(mounts) is not list:
                    raise _wrong(f"{where}.spec.{kind}[{i}].volumeMounts", "a list", mounts)
                for j, m in enumerate(mounts):
                    if type(m) is not dict or type(m.get("name")) is not str or type(m.get("mountPath")) is not str:
                        at = f"{where}.spec.{kind}[{i}].volumeMounts[{j}]"
                        _named_object(m, at)
                        raise _wrong(f"{at}.mountPath", "a string", m.get("mountPath"))
            env = c.get("env")
            # Its entries are not checked: see mutation._env_entry.
            if env is not None and type(env) is not list:
                raise _wrong(f"{where}.spec.{kind}[{i}].env", "a list", env)
    return pod


def _strings_where_set(obj: Json, keys: tuple[str, ...], *, where: str) -> None:
    for key in keys:
        value = obj.get(key)
        if value is not None and type(value) is not str:
            raise _wrong(f"{where}.{key}", "a string", value)


def _named_object(value: object, where: str) -> None:
    """Raise for ``value`` unless it is an object with a string ``name``."""
    if type(value) is not dict:
        raise _wrong(where, "an object", value)
    if type(value.get("name")) is not str:
        raise _wrong(f"{where}.name", "a string", value.get("name"))


def _wrong(where: str, expected: str, value: object) -> InvalidReview:
    return InvalidReview(f"{where} must be {expected}, got {kind_of(value)}")


def token_sources(volume: Json) -> list[Json]:
    """The ``serviceAccountToken`` sources of a projected volume, each as its object; ``[]`` for others.

    Volumes are shape-checked only for their name, so the projection is read defensively: what is
    not a list of objects holds no token source we could use.
    """
    projected = volume.get("projected")
    sources = projected.get("sources") if type(projected) is dict else None
    if type(sources) is not list:
        return []
    found = []
    for source in sources:
        token = source.get("serviceAccountToken") if type(source) is dict else None
        if type(token) is dict:
            found.append(token)
    return found


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
