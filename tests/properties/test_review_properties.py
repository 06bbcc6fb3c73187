"""Properties of the review over generated Pods of every shape the API server can send.

For every generated Pod and annotation set: the answer is a well-formed AdmissionReview; a denial
carries a message; a patch only adds, applies with jsonpatch, keeps every field of the original Pod,
yields a Pod that passes the Kubernetes schema (strict) and the API server's own rules we depend on,
and reviewing the patched Pod again yields no patch. Pods ask for one to eight audiences (a
comma-separated list), and the invalid ones include every way a list can be wrong.
"""

import copy
import re

import jsonpatch
import kubernetes_validate
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.helpers import admission_review, ops_of, run
from webhook.core.annotations import TokenSpec
from webhook.core.contract import Contract
from webhook.core.kubernetes import MIN_EXPIRATION_SECONDS, SERVICE_ACCOUNT_MOUNT_PATH
from webhook.core.mutation import token_volume
from webhook.core.wire import Json

CONTRACT = Contract()
MOUNT_PATH = CONTRACT.mount_path
dns_label = st.from_regex(r"\A[a-z]([-a-z0-9]{0,14}[a-z0-9])?\Z")
env_name = st.from_regex(r"\A[A-Za-z_][-._A-Za-z0-9]{0,12}\Z")
paths = st.from_regex(r"\A/[a-z]{1,8}(/[a-z0-9._-]{1,8}){0,2}\Z").filter(
    lambda p: not p.startswith(MOUNT_PATH) and not MOUNT_PATH.startswith(p + "/")
)
OUR_ENV_VARS = (CONTRACT.env_var, CONTRACT.dir_env_var)
SEPARATORS = st.sampled_from([",", ", ", ",  ", ",\t", ",\n"])
"""White space is allowed after a comma."""

ONE_VALID_AUDIENCE = st.one_of(
    st.sampled_from(["data-store", "https://secret-store.example.com", "a" * 200, "x.y/z?w=1", "Vault", ".hidden."]),
    # At most 20 characters: 20 four-byte characters encode to a 240-byte file name, within the kubelet's 255.
    st.text(min_size=1, max_size=20).filter(
        lambda a: a == a.strip() and "," not in a and a not in CONTRACT.denied_audiences
    ),
)
VALID_AUDIENCE_LISTS = st.lists(ONE_VALID_AUDIENCE, min_size=1, max_size=CONTRACT.max_audiences, unique=True).filter(
    # An audience named like the token file must come first, or its file would be the first one's.
    lambda audiences: CONTRACT.token_file not in audiences[1:]
)


@st.composite
def joined(draw: st.DrawFn, audiences: st.SearchStrategy[list[str]]) -> str:
    """A list of audiences as a Pod writes it in the annotation."""
    drawn = draw(audiences)
    value = drawn[0]
    for audience in drawn[1:]:
        value += draw(SEPARATORS) + audience
    return value


VALID_AUDIENCES = joined(VALID_AUDIENCE_LISTS)
AUDIENCES = st.one_of(
    st.sampled_from(["data-store", "https://secret-store.example.com", "vault", "a" * 200, "x.y/z?w=1"]),
    st.sampled_from(["", " ", " data-store", "https://kubernetes.default.svc"]),  # invalid
    st.text(min_size=1, max_size=30),
    VALID_AUDIENCES,
    st.sampled_from(
        [
            "a,,b",  # an empty element
            ",",
            "data-store,",
            "data-store , secret-store",  # white space before a comma
            "data-store, secret-store ",
            "data-store, data-store",  # a duplicate
            ",".join(f"a{i}" for i in range(CONTRACT.max_audiences + 1)),  # too many
            "data-store, https://kubernetes.default.svc",  # denied
            "data-store, token",  # its file would be the first one's
            "data-store, " + "b" * 300,  # a file name too long for the kubelet
            "data-store, " + "é" * 50,
        ]
    ),
    joined(st.lists(st.text(max_size=12), min_size=2, max_size=10)),
)
EXPIRATIONS = st.one_of(
    st.none(),
    st.integers(0, 200_000).map(str),
    st.integers(10**19, 10**25).map(str),
    st.sampled_from(["1h", "-1", "3600.0", "", "+700", "9" * 5000]),
)


@st.composite
def pods(draw: st.DrawFn, *, valid: bool = False) -> Json:
    """Pods as the API server sends them; ``valid``: opted in with valid annotations and no conflict."""
    volume_names = draw(st.lists(dns_label, max_size=4, unique=True))
    volumes: list[Json] = [{"name": n, "emptyDir": {}} for n in volume_names]
    extras = ["none", "kube-api-access", "ours"] + ([] if valid else ["legacy", "conflicting-name"])
    kind_of_extra = draw(st.sampled_from(extras))
    if kind_of_extra == "kube-api-access":
        volumes.append(
            {
                "name": "kube-api-access-abcde",
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    ],
                },
            }
        )
    elif kind_of_extra == "legacy":
        volumes.append({"name": "default-token-ab1cd", "secret": {"secretName": "default-token-ab1cd"}})
    elif kind_of_extra == "conflicting-name":
        volumes.append({"name": "audience-token", "emptyDir": {}})
    volumes = [v for v in volumes if v["name"] != "audience-token" or kind_of_extra == "conflicting-name"]
    mountable = [v["name"] for v in volumes]

    names = draw(st.lists(dns_label, min_size=1, max_size=8, unique=True))
    split = draw(st.integers(0, len(names) - 1))
    containers = [draw(container(name, mountable=mountable, init=False, conflicts=not valid)) for name in names[split:]]
    init = [draw(container(name, mountable=mountable, init=True, conflicts=not valid)) for name in names[:split]]

    pod: Json = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": "api"},
        "spec": {"containers": containers},
    }
    if draw(st.booleans()):
        pod["metadata"]["name"] = draw(dns_label)
    else:
        pod["metadata"]["generateName"] = draw(dns_label) + "-"
    if init:
        pod["spec"]["initContainers"] = init
    if volumes:
        pod["spec"]["volumes"] = volumes
    if draw(st.booleans()):
        pod["spec"]["serviceAccountName"] = "default"
    if kind_of_extra == "legacy" and draw(st.booleans()):
        containers[0].setdefault("volumeMounts", []).append(
            {"name": "default-token-ab1cd", "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}
        )

    annotations = {f"example.com/{draw(dns_label)}": draw(st.text(max_size=10))} if draw(st.booleans()) else {}
    if valid or draw(st.integers(0, 9)) > 0:
        annotations[CONTRACT.annotation("audience")] = draw(VALID_AUDIENCES if valid else AUDIENCES)
    expiration = draw(st.one_of(st.none(), st.integers(600, 86400).map(str)) if valid else EXPIRATIONS)
    if expiration is not None:
        annotations[CONTRACT.annotation("expiration-seconds")] = expiration
    if draw(st.booleans()):
        skippable = names if valid else [*names, "not-a-container"]
        skipped = draw(st.lists(st.sampled_from(skippable), max_size=3))
        annotations[CONTRACT.annotation("skip-containers")] = ",".join(skipped)
    if annotations:
        pod["metadata"]["annotations"] = annotations
    # A lifetime our volume can hold: digits, and few enough for int() (see annotations._MAX_DIGITS).
    numeric = expiration is None or re.fullmatch(r"[0-9]{1,20}", expiration) is not None
    audience = annotations.get(CONTRACT.annotation("audience"))
    if kind_of_extra == "ours" and audience is not None and numeric and draw(st.booleans()):
        # Our volume as an earlier review added it: the Pod is being reviewed again.
        audiences = tuple(a.lstrip() for a in audience.split(","))
        ours = token_volume(TokenSpec(audiences, int(expiration or 3600), frozenset()), CONTRACT)
        ours["projected"]["defaultMode"] = 420  # what the API server defaults in
        pod["spec"].setdefault("volumes", []).append(ours)
    return pod


@st.composite
def container(draw: st.DrawFn, name: str, *, mountable: list[str], init: bool, conflicts: bool) -> Json:
    c: Json = {"name": name, "image": "registry.example.com/app:1"}
    if init and draw(st.booleans()):
        c["restartPolicy"] = "Always"  # a native sidecar
    env = draw(st.lists(env_name, max_size=3, unique=True))
    if draw(st.integers(0, 5)) == 0:
        env.append(draw(st.sampled_from(OUR_ENV_VARS)))
    if env:
        c["env"] = [{"name": n, "value": draw(st.text(max_size=8))} for n in dict.fromkeys(env)]
    mounts = draw(
        st.lists(st.tuples(st.sampled_from(mountable), paths), max_size=3, unique_by=lambda m: m[1])
        if mountable
        else st.just([])
    )
    if conflicts and mountable and draw(st.integers(0, 7)) == 0:
        mounts.append((mountable[0], MOUNT_PATH))  # another volume at our mount path
    if mounts:
        c["volumeMounts"] = [{"name": v, "mountPath": p} for v, p in mounts]
    return c


def api_server_rules_hold(pod: Json) -> None:
    """The API server's own validation rules that a patch could break."""
    volumes = [v["name"] for v in pod["spec"].get("volumes", [])]
    assert len(volumes) == len(set(volumes)), "unique volume names"
    for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
        mounts = c.get("volumeMounts", [])
        assert all(m["name"] in volumes for m in mounts), "every mount names an existing volume"
        assert len({m["mountPath"].rstrip("/") for m in mounts}) == len(mounts), "unique mount paths per container"
        names = [e["name"] for e in c.get("env", [])]
        assert len(names) == len(set(names)), "no duplicate env names"
    for v in pod["spec"].get("volumes", []):
        token_paths = []
        for source in v.get("projected", {}).get("sources", []):
            if "serviceAccountToken" in source:
                assert source["serviceAccountToken"].get("expirationSeconds", 3600) >= MIN_EXPIRATION_SECONDS
                token_paths.append(source["serviceAccountToken"]["path"])
        kubelet_writes(token_paths)


def kubelet_writes(paths: list[str]) -> None:
    """The kubelet's atomic writer can write every path (the API server checks only some of this)."""
    assert len({p.casefold() for p in paths}) == len(paths), "no two token files are one file"
    for path in paths:
        parts = path.split("/")
        assert not path.startswith("/"), path
        assert ".." not in parts, path
        assert not parts[0].startswith(".."), path
        assert all(0 < len(part.encode()) <= 255 for part in parts), path


def original_fields_kept(original: Json, patched: Json) -> None:
    assert patched["metadata"] == original["metadata"]
    assert {k: v for k, v in patched["spec"].items() if k not in ("volumes", "containers", "initContainers")} == {
        k: v for k, v in original["spec"].items() if k not in ("volumes", "containers", "initContainers")
    }
    assert patched["spec"].get("volumes", [])[: len(original["spec"].get("volumes", []))] == original["spec"].get(
        "volumes", []
    )
    for kind in ("containers", "initContainers"):
        before, after = original["spec"].get(kind, []), patched["spec"].get(kind, [])
        assert len(before) == len(after)
        for b, a in zip(before, after, strict=True):
            assert {k: v for k, v in a.items() if k not in ("env", "volumeMounts")} == {
                k: v for k, v in b.items() if k not in ("env", "volumeMounts")
            }
            assert a.get("volumeMounts", [])[: len(b.get("volumeMounts", []))] == b.get("volumeMounts", [])
            env_before, env_after = b.get("env", []), a.get("env", [])
            added = len(env_after) - len(env_before)
            assert 0 <= added <= len(OUR_ENV_VARS), "at most our env vars are added"
            assert env_after[added:] == env_before, "ours are prepended, nothing else changes"
            assert all(e["name"] in OUR_ENV_VARS for e in env_after[:added])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(pods(), pods(valid=True)), st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]))
def test_every_answer_is_well_formed_and_every_patch_is_safe_valid_and_idempotent(pod: Json, version: str) -> None:
    body = admission_review(pod, api_version=version, uid="prop-uid")
    reviewed = run(body)
    answer = reviewed.response
    assert answer["apiVersion"] == version
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == "prop-uid"
    event(reviewed.outcome)
    if not response["allowed"]:
        assert response["status"]["code"] in (403, 422)
        assert len(response["status"]["message"]) > 20
        assert "patch" not in response
        assert reviewed.outcome == "denied"
        return
    check_patch(pod, ops_of(reviewed), version=version)
    assert reviewed.outcome == ("mutated" if ops_of(reviewed) else "unchanged")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods(valid=True))
def test_a_validly_annotated_pod_without_conflicts_is_always_allowed_and_safely_patched(pod: Json) -> None:
    reviewed = run(admission_review(pod))
    event(reviewed.outcome)
    assert reviewed.response["response"]["allowed"] is True, reviewed.response["response"].get("status")
    check_patch(pod, ops_of(reviewed), version="admission.k8s.io/v1")


def check_patch(pod: Json, ops: list[Json], *, version: str) -> None:
    """The patch applies, keeps the Pod's fields, passes the schema and the API server's rules, and is final."""
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), ops)
    original_fields_kept(pod, patched)
    api_server_rules_hold(patched)
    kubernetes_validate.validate(patched, "1.37.0", strict=True)
    again = run(admission_review(patched, api_version=version))
    assert again.response["response"]["allowed"] is True
    assert ops_of(again) == []


@settings(max_examples=200, deadline=None)
@given(pods(valid=True))
def test_an_annotated_pod_that_is_allowed_has_every_token_in_every_container_not_skipped(pod: Json) -> None:
    response = run(admission_review(pod)).response["response"]
    annotation = pod["metadata"].get("annotations", {}).get(CONTRACT.annotation("audience"))
    if not response["allowed"] or annotation is None:
        return
    audiences = [a.lstrip() for a in annotation.split(",")]
    several = len(audiences) > 1
    event(f"{len(audiences)} audience(s)")
    patched = jsonpatch.apply_patch(copy.deepcopy(pod), ops_of(run(admission_review(pod))))
    skipped = {
        s.strip() for s in pod["metadata"]["annotations"].get(CONTRACT.annotation("skip-containers"), "").split(",")
    }
    wanted_env = {CONTRACT.env_var, CONTRACT.dir_env_var} if several else {CONTRACT.env_var}
    originals = {c["name"]: c for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])}
    for c in patched["spec"]["containers"] + patched["spec"].get("initContainers", []):
        has_mount = {"name": "audience-token", "mountPath": MOUNT_PATH, "readOnly": True} in c.get("volumeMounts", [])
        names = {e["name"] for e in c.get("env", [])}
        assert (has_mount and wanted_env <= names) is (c["name"] not in skipped), c["name"]
        added = names - {e["name"] for e in originals[c["name"]].get("env", [])}
        assert added <= wanted_env, "a one-audience Pod gets no directory variable"
    token = next(v for v in patched["spec"]["volumes"] if v["name"] == "audience-token")
    sources = [s["serviceAccountToken"] for s in token["projected"]["sources"]]
    assert (sources[0]["audience"], sources[0]["path"]) == (audiences[0], CONTRACT.token_file), "the primary stays"
    assert {s["audience"] for s in sources} == set(audiences)
    assert {s["expirationSeconds"] for s in sources} == {sources[0]["expirationSeconds"]}, "one expiration for all"
    if several:
        files = {(s["audience"], f"{MOUNT_PATH}/{s['path']}") for s in sources}
        assert all((a, CONTRACT.audience_token_path(a)) in files for a in audiences), "each found by the rule"
    else:
        assert len(sources) == 1
