"""The contract as admission policies: a MutatingAdmissionPolicy and a ValidatingAdmissionPolicy, with bindings.

The webhook engine answers each Pod in Python (``webhook.core.review``); this engine asks the API
server to do the same in CEL, with no server to run. Both are built from one :class:`Contract`:
every name, path, limit and list below is read from it, so a setting changes both engines.

- The MutatingAdmissionPolicy computes the webhook's own JSON patch, op for op (``add`` only, the same
  paths and values as ``webhook.core.mutation``): what is already there is not added again, so it
  is idempotent on reinvocation, and nothing it does not add is touched.
- The ValidatingAdmissionPolicy refuses what the webhook refuses, one validation per rule, each with a
  ``messageExpression`` that names the annotation, the value and the fix. It runs after every mutation,
  so it sees the Pod as it will be stored: a conflict the mutation left alone is refused there.
- Where CEL cannot follow the webhook exactly, the Pod is refused with a message that says to use the
  webhook engine: never admitted different from what the webhook would make of it. Those cases, and
  everything only the webhook does, are listed in docs/admission-policy.md.

Pure: plain dicts in the API's wire form; the command line turns them into YAML.
"""

from webhook.core.contract import (
    AUDIENCE_KEY,
    EXPIRATION_KEY,
    MAX_FILE_NAME_BYTES,
    OPT_IN_KEYS,
    SKIP_CONTAINERS_KEY,
    Contract,
)
from webhook.core.kubernetes import (
    DEFAULT_EXPIRATION_SECONDS,
    MIN_EXPIRATION_SECONDS,
    MIRROR_POD_ANNOTATION,
    SERVICE_ACCOUNT_MOUNT_PATH,
)
from webhook.core.messages import SHOWN_CHARACTERS
from webhook.core.wire import Json
from webhook.errors import ConfigError

API_VERSION = "admissionregistration.k8s.io/v1"
"""MutatingAdmissionPolicy is GA (served, feature gate on) from Kubernetes 1.36, ValidatingAdmissionPolicy from 1.30."""
MUTATING_NAME = VALIDATING_NAME = "token-projector"
WARNING_NAME = "token-projector-warnings"
"""The ValidatingAdmissionPolicy whose binding only warns: what the webhook answers with ``warnings``."""
_KEPT_AS_IS = "^[a-z0-9_-]([a-z0-9._-]*[a-z0-9_-])?$"
"""``contract._KEPT_AS_IS`` for RE2: an audience that is its own token file name."""
_KEPT_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_UNREADABLE = "[\\x1c-\\x1f]"
"""Characters Python's str.strip() takes for white space and CEL's trim() does not (Unicode White_Space)."""


def admission_policies(contract: Contract, *, excluded_namespaces: tuple[str, ...], opt_out_label: str) -> list[Json]:
    """The objects of the policy engine, in the order they are applied: each policy, then its binding.

    A MutatingAdmissionPolicy, a ValidatingAdmissionPolicy that denies and one that warns (left out when
    there is nothing to warn of), each with its binding.

    ``excluded_namespaces`` and ``opt_out_label`` scope the bindings as the webhook's configuration is
    scoped (``webhook.install``): those namespaces, and any labelled ``opt_out_label: "true"``, are left alone.
    """
    if any("[" in pattern for pattern in contract.allowed_audiences):
        raise ConfigError(
            "--allowed-audiences / TOKEN_PROJECTOR_ALLOWED_AUDIENCES: a [...] character class is not available "
            "in the admission policy engine (only * and ?); use the webhook engine, or list the audiences"
        )
    expressions = _Expressions(contract)
    selector = {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": list(excluded_namespaces)},
            {"key": opt_out_label, "operator": "NotIn", "values": ["true"]},
        ]
    }
    labels = {"app.kubernetes.io/name": "token-projector", "app.kubernetes.io/component": "admission-policy"}
    match_resources = {
        "namespaceSelector": selector,
        "objectSelector": {},
        "matchPolicy": "Equivalent",
    }
    objects = [
        _policy("MutatingAdmissionPolicy", MUTATING_NAME, labels, expressions.mutating_spec()),
        _policy(
            "MutatingAdmissionPolicyBinding",
            MUTATING_NAME,
            labels,
            {"policyName": MUTATING_NAME, "matchResources": match_resources},
        ),
    ]
    for name, action in ((VALIDATING_NAME, "Deny"), (WARNING_NAME, "Warn")):
        spec = expressions.validating_spec(action)
        if spec["validations"]:
            objects.append(_policy("ValidatingAdmissionPolicy", name, labels, spec))
            binding = {"policyName": name, "validationActions": [action], "matchResources": match_resources}
            objects.append(_policy("ValidatingAdmissionPolicyBinding", name, labels, binding))
    return objects


def _policy(kind: str, name: str, labels: dict[str, str], spec: Json) -> Json:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name, "labels": labels}, "spec": spec}


def cel_string(text: str) -> str:
    """``text`` as a CEL string literal (single-quoted; control and unprintable characters escaped)."""
    out = ["'"]
    for char in text:
        if char in "\\'":
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append("'")
    return "".join(out)


def cel_list(items: list[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(map(cel_string, items)) + "]"


def glob_regex(pattern: str) -> str:
    """An RE2 regular expression that matches what ``fnmatch.fnmatchcase(value, pattern)`` matches (no [...])."""
    out = ["(?s)^"]
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char.isascii() and char.isalnum():
            out.append(char)
        else:
            out.append(f"\\x{{{ord(char):x}}}")
    out.append("\\z")
    return "".join(out)


def percent_escapes() -> dict[str, str]:
    """Each ASCII character that ``contract.audience_file_name`` encodes wherever it is, with its encoding."""
    return {chr(code): f"%{code:02X}" for code in range(0x80) if chr(code) not in _KEPT_CHARACTERS}


class _Expressions:
    """The CEL of both policies for one contract; ``v.`` is short for ``variables.``."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.audience_key = contract.annotation(AUDIENCE_KEY)
        self.expiration_key = contract.annotation(EXPIRATION_KEY)
        self.skip_key = contract.annotation(SKIP_CONTAINERS_KEY)
        self.annotation_rules: list[str] = []
        """The expressions of the validations on annotations alone, as ``validations`` last built them."""

    # -- the variables both policies share ------------------------------------------------------------

    def variables(self) -> list[Json]:
        c = self.contract
        escapes = ", ".join(f"{cel_string(char)}: {cel_string(code)}" for char, code in percent_escapes().items())
        encoded = (
            f"a.matches({cel_string(_KEPT_AS_IS)}) ? a : a.split('').transformList(i, ch, "
            "ch == '.' && (i == 0 || i == size(a) - 1) ? '%2E' : "
            f"({{{escapes}}}[?ch].orValue(ch))).join()"
        )
        expiration_text = f"variables.annotations[?{cel_string(self.expiration_key)}]"
        pairs = [
            ("annotations", "object.metadata.?annotations.orValue({})"),
            ("requested", f"{cel_string(self.audience_key)} in variables.annotations"),
            ("value", f"variables.annotations[?{cel_string(self.audience_key)}].orValue('')"),
            ("parts", "variables.value.split(',')"),
            # As the webhook reads a list: white space is allowed after a comma (refused elsewhere).
            ("audiences", "variables.parts.transformList(i, p, i == 0 ? p : p.trim())"),
            ("several", "size(variables.audiences) > 1"),
            ("names", f"variables.audiences.map(a, {encoded})"),
            # contract.token_files: (audience, path in the volume), the primary first at token_file.
            (
                "files",
                f"[[variables.audiences[0], {cel_string(c.token_file)}]] + (variables.several ? "
                "lists.range(size(variables.audiences)).filter(i, variables.audiences[i] != variables.audiences[0] "
                f"|| variables.names[i] != {cel_string(c.token_file)})"
                ".map(i, [variables.audiences[i], variables.names[i]]) : [])",
            ),
            ("expirationText", f"{expiration_text}.orValue('')"),
            (
                "expiration",
                f"!({expiration_text}.hasValue()) ? {c.default_expiration_seconds} : "
                f"variables.expirationText.matches('^0*[0-9]{{1,12}}$') && size(variables.expirationText) <= 20 ? "
                f"int(variables.expirationText) : {c.default_expiration_seconds}",
            ),
            (
                "skipped",
                f"variables.annotations[?{cel_string(self.skip_key)}].orValue('').split(',')"
                ".map(n, n.trim()).filter(n, n != '')",
            ),
            ("volumes", "object.spec.?volumes.orValue([])"),
            ("initContainers", "object.spec.?initContainers.orValue([])"),
            ("containers", "object.spec.?containers.orValue([])"),
            (
                "containerNames",
                "variables.initContainers.map(c, c.name) + variables.containers.map(c, c.name)",
            ),
        ]
        return [{"name": name, "expression": expression} for name, expression in pairs]

    def _same_path(self, path: str, target: str) -> str:
        """``webhook.core.pod.same_path`` in CEL: equal once trailing slashes are dropped."""
        at = cel_string(target.rstrip("/"))
        return f"({path} == {at} || ({path}.startsWith({at}) && {path}.substring(size({at})).matches('^/+$')))"

    def match_conditions(self, *, annotated_only: bool, any_opt_in: bool = False) -> list[Json]:
        """``any_opt_in``: also a Pod that carries only a webhook-only opt-in annotation (the verifying proxy's),
        which the validating policy must see to refuse it, never admit it unprotected."""
        conditions = [
            {
                "name": "not-a-mirror-pod",
                "expression": "!has(object.metadata.annotations) || !("
                f"{cel_string(MIRROR_POD_ANNOTATION)} in object.metadata.annotations)",
            }
        ]
        if annotated_only and any_opt_in:
            keys = cel_list([self.contract.annotation(key) for key in OPT_IN_KEYS])
            carries = f"{keys}.exists(k, k in object.metadata.annotations)"
            conditions.append(
                {"name": "has-opt-in-annotation", "expression": f"has(object.metadata.annotations) && {carries}"}
            )
        elif annotated_only:
            conditions.append(
                {
                    "name": "has-audience-annotation",
                    "expression": "has(object.metadata.annotations) && "
                    f"{cel_string(self.audience_key)} in object.metadata.annotations",
                }
            )
        return conditions

    @staticmethod
    def match_constraints() -> Json:
        return {
            "resourceRules": [
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
            ],
            "matchPolicy": "Equivalent",
        }

    # -- the mutation ----------------------------------------------------------------------------------

    def mutating_spec(self) -> Json:
        # The mutation leaves alone a Pod whose annotations the validating policy refuses: patched, it could fail
        # the API server's own validation (a lifetime under 600 s, an empty path), which runs first and would
        # answer in place of our message.
        self.validations()
        admissible = " && ".join(f"({expression})" for expression in self.annotation_rules)
        return {
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "matchConstraints": self.match_constraints(),
            "matchConditions": self.match_conditions(annotated_only=True),
            "variables": [*self.variables(), {"name": "admissible", "expression": admissible}],
            "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": self.patch()}}],
        }

    def token_volume(self) -> str:
        """``webhook.core.mutation.token_volume``: one serviceAccountToken source per file of ``variables.files``."""
        return (
            f"Object.spec.volumes{{name: {cel_string(self.contract.volume_name)}, projected: "
            "Object.spec.volumes.projected{sources: variables.files.map(f, Object.spec.volumes.projected.sources{"
            "serviceAccountToken: Object.spec.volumes.projected.sources.serviceAccountToken{"
            "audience: f[0], expirationSeconds: variables.expiration, path: f[1]}})}}"
        )

    def patch(self) -> str:
        """``webhook.core.mutation.plan_injection``'s ops, in its order: the volume, then each container's."""
        # Object.* initializers compile only in the mutation itself, not in a variable: the volume is spelled twice.
        volume = self.token_volume()
        volume_ops = (
            "(!has(object.spec.volumes) ? "
            f"[JSONPatch{{op: 'add', path: '/spec/volumes', value: [{volume}]}}] : "
            f"object.spec.volumes.exists(v, v.name == {cel_string(self.contract.volume_name)}) ? [] : "
            f"[JSONPatch{{op: 'add', path: '/spec/volumes/-', value: {volume}}}])"
        )
        ops = f"{volume_ops}\n+ {self._container_ops('initContainers')}\n+ {self._container_ops('containers')}"
        return f"!variables.admissible ? [] :\n{ops}"

    def _container_ops(self, kind: str) -> str:
        c = self.contract
        typed = f"Object.spec.{kind}"
        mount = (
            f"{typed}.volumeMounts{{name: {cel_string(c.volume_name)}, "
            f"mountPath: {cel_string(c.mount_path)}, readOnly: true}}"
        )
        path_var = f"{typed}.env{{name: {cel_string(c.env_var)}, value: {cel_string(c.token_path)}}}"
        dir_var = f"{typed}.env{{name: {cel_string(c.dir_env_var)}, value: {cel_string(c.token_dir)}}}"
        env = f"(variables.several ? [{path_var}, {dir_var}] : [{path_var}])"
        base = f"'/spec/{kind}/' + string(i)"
        mounts = (
            f"(!has(c.volumeMounts) ? [JSONPatch{{op: 'add', path: {base} + '/volumeMounts', value: [{mount}]}}] : "
            f"c.volumeMounts.exists(m, {self._same_path('m.mountPath', c.mount_path)}) ? [] : "
            f"[JSONPatch{{op: 'add', path: {base} + '/volumeMounts/-', value: {mount}}}])"
        )
        # Prepended, as the webhook does: the container's own variables may refer to them as $(NAME).
        variables = (
            f"(!has(c.env) ? [JSONPatch{{op: 'add', path: {base} + '/env', value: {env}}}] : "
            f"{env}.filter(e, !c.env.exists(x, x.name == e.name))"
            f".transformList(j, e, JSONPatch{{op: 'add', path: {base} + '/env/' + string(j), value: e}}))"
        )
        return (
            f"variables.{kind}.transformList(i, c, c.name in variables.skipped ? [] : {mounts} + {variables}).flatten()"
        )

    # -- the refusals ----------------------------------------------------------------------------------

    def validating_spec(self, action: str) -> Json:
        """The policy whose validations refuse (``Deny``) or, as the webhook's warnings, warn (``Warn``)."""
        c = self.contract
        # Legacy scope "all": the webhook sees every Pod, and warns of unknown annotations on any; it refuses
        # one that is not annotated only for a legacy token.
        everywhere = c.legacy_token_scope == "all" and (action == "Warn" or c.legacy_token_policy == "deny")
        rules = self.validations() if action == "Deny" else self.warnings()
        return {
            "failurePolicy": "Fail",
            "matchConstraints": self.match_constraints(),
            "matchConditions": self.match_conditions(annotated_only=not everywhere, any_opt_in=action == "Deny"),
            "variables": self.variables(),
            "validations": rules,
        }

    def warnings(self) -> list[Json]:
        """The webhook's warnings: annotations it does not know, and legacy tokens under ``warn``."""
        c = self.contract
        prefix = cel_string(c.annotation_prefix + "/")
        known = cel_list(sorted(c.known_annotations))
        unknown = f"variables.annotations.filter(k, k.startsWith({prefix}) && !(k in {known}))"
        rules = [
            {
                "expression": f"size({unknown}) == 0",
                "messageExpression": f"'annotation ' + {unknown}.join(', ') + ' is not one token-projector knows "
                "and was ignored'",
            }
        ]
        for variable, value, where in (
            (c.env_var, c.token_path, f"the token is at {c.token_path}"),
            (c.dir_env_var, c.token_dir, f"the token files are in {c.token_dir}"),
        ):
            # mutation._own_value_warning: a container that sets our variable itself keeps its value (never shown).
            own = " + ".join(
                f"variables.{kind}.filter(c, !(c.name in variables.skipped) && "
                f"c.?env.orValue([]).exists(e, e.name == {cel_string(variable)}) && "
                f"c.env.filter(e, e.name == {cel_string(variable)}).map(e, "
                f"e.?value.orValue('') != {cel_string(value)} || has(e.valueFrom))[0]).map(c, c.name)"
                for kind in ("initContainers", "containers")
            )
            guard = "" if variable == c.env_var else "!variables.several || "
            rules.append(
                {
                    "expression": f"!variables.requested || {guard}size({own}) == 0",
                    "messageExpression": f"'container ' + ({own}).join(', ') + ' already sets {variable}; its own "
                    f"value was kept, and {where}'",
                }
            )
        if c.legacy_token_policy == "warn":
            legacy = self._legacy_volumes()
            rules.append(
                {
                    "expression": f"size({legacy}) == 0",
                    "messageExpression": f"'volume ' + {legacy}.map(v, v.name + ' carries the legacy service account "
                    "token Secret ' + v.secret.?secretName.orValue('')).join('; ') + ', which never expires; remove "
                    "it (see token-projector\\'s README)'",
                }
            )
        return rules

    def validations(self) -> list[Json]:
        """Each of the webhook's refusals: an expression that must hold, its messageExpression and reason."""
        c = self.contract
        key, value = self.audience_key, "variables.value"
        said = f"'annotation {key} is ' + {_shown(value)}"
        rules: list[Json] = []
        self.annotation_rules = []

        def rule(
            expression: str, message: str, *, annotated: bool = True, reason: str = "Invalid", of_pod: bool = False
        ) -> None:
            """``of_pod``: a rule on the Pod's other fields; the others are on its annotations alone."""
            expression = f"!variables.requested || ({expression})" if annotated else expression
            rules.append({"expression": expression, "messageExpression": message, "reason": reason})
            if not of_pod:
                self.annotation_rules.append(expression)

        rule(
            f"!{value}.matches({cel_string(_UNREADABLE)}) && !variables.annotations[?{cel_string(self.skip_key)}]"
            f".orValue('').matches({cel_string(_UNREADABLE)}) && (!variables.several || "
            "variables.audiences.all(a, a.matches('^[\\\\x00-\\\\x7f]*$')))",
            f"{said} + ', which this cluster\\'s admission policy cannot read exactly (an information separator "
            "character, or a non-ASCII audience in a list, whose token file name it cannot compute); use ASCII "
            "audiences, or ask the cluster\\'s administrators for the token-projector webhook engine "
            "(docs/admission-policy.md)'",
        )
        # A Pod annotation the contract knows and these policies do not implement (a feature added to the webhook,
        # such as a sidecar it injects) is refused: a policy that ignored it would admit a Pod other than the
        # webhook's.
        webhook_only = sorted(c.known_annotations - {self.audience_key, self.expiration_key, self.skip_key})
        if webhook_only:
            used = f"{cel_list(webhook_only)}.filter(k, k in variables.annotations)"
            rule(
                f"size({used}) == 0",
                f"'annotation ' + {used}.join(', ') + ' asks for what only the token-projector webhook engine does, "
                "and this cluster enforces the contract with admission policies; remove it, or ask the cluster\\'s "
                "administrators for the webhook engine (docs/admission-policy.md)'",
                # Also on a Pod without the audience annotation: the proxy's annotations opt a Pod in by themselves.
                annotated=False,
            )
        rule(
            f"size(variables.parts) <= {c.max_audiences}",
            f"{said} + ', a list of ' + string(size(variables.parts)) + ' audiences; this cluster allows at most "
            f"{c.max_audiences} per Pod (each one is a token the kubelet requests and rotates): ask only for the "
            "services this Pod calls'",
        )
        rule(
            "variables.parts.all(p, p.trim() != '')",
            f"variables.several ? {said} + ': an audience of the list is empty; separate the audiences with single "
            f"commas, e.g. {key}: data-store, secret-store (an empty audience would yield a Kubernetes API "
            f"credential)' : 'annotation {key} is empty; it must name the audience that will verify the token, e.g. "
            f"{key}: data-store (an empty audience would yield a Kubernetes API credential)'",
        )
        rule(
            "variables.parts.all(i, p, i == 0 ? p == p.trim() : p.endsWith(p.trim()))",
            f"{said} + ', with white space before a comma or at an end (it is allowed only after a comma); use ' + "
            + _shown("variables.parts.map(p, p.trim()).filter(p, p != '').join(', ')")
            + " + ': a token\\'s audience must match the verifier\\'s exactly'",
        )
        rule(
            f"!variables.audiences.exists(a, a in {cel_list(c.denied_audiences)})",
            f"{said} + ': it names an audience of the Kubernetes API server itself, which this cluster does not "
            f"allow (denied: {', '.join(c.denied_audiences)}); name your own service\\'s audience instead'",
        )
        if c.allowed_audiences:
            matches = " || ".join(f"a.matches({cel_string(glob_regex(p))})" for p in c.allowed_audiences)
            rule(
                f"variables.audiences.all(a, {matches})",
                f"{said} + ': not an audience this cluster allows; allowed: {', '.join(c.allowed_audiences)} (glob "
                "patterns); check its spelling against the audience the receiving service verifies'",
            )
        guarded = f"size(variables.parts) > {c.max_audiences} || "
        rule(
            guarded + "variables.audiences.all(a, size(variables.audiences.filter(b, b == a)) == 1)",
            f"{said} + ': an audience is listed twice; list each audience once (each gets one token)'",
        )
        rule(
            guarded + "!variables.several || variables.files.all(f, f == variables.files[0] || "
            f"size(f[1]) <= {MAX_FILE_NAME_BYTES})",
            f"{said} + ': an audience is too long for a token file: the kubelet writes names of at most "
            f"{MAX_FILE_NAME_BYTES} bytes (see docs/multiple-audiences.md for the file rule); use a shorter audience'",
        )
        folded, directories = _token_file_folded(c)
        rule(
            guarded + "!variables.several || lists.range(size(variables.files)).all(i, i == 0 || !("
            f"(variables.files[i][1].lowerAscii() == {cel_string(folded)} && variables.files[i][0] != "
            f"variables.audiences[0]) || variables.files[i][1].lowerAscii() in {cel_list(directories)}))",
            f"{said} + ': the token files of two audiences would collide in {c.token_dir} (the first audience\\'s "
            f"token is also at {c.token_file}); list the other audience first, or drop one of them'",
        )
        expiration = "variables.expirationText"
        rule(
            f"!variables.annotations[?{cel_string(self.expiration_key)}].hasValue() || ({expiration}"
            f".matches('^[0-9]+$') && size({expiration}) <= 20 && {expiration}.matches('^0*[0-9]{{1,12}}$') && "
            f"int({expiration}) >= {MIN_EXPIRATION_SECONDS} && int({expiration}) <= {c.max_expiration_seconds})",
            f"'annotation {self.expiration_key} is ' + {_shown(expiration)} + ', which is not a whole number of "
            f"seconds from {MIN_EXPIRATION_SECONDS} to {c.max_expiration_seconds}; it must be one'",
        )
        legacy = self._legacy_volumes()
        if c.legacy_token_policy == "deny":
            opt_in = f" For service-to-service calls, annotate the Pod with {key}: <audience>."
            rule(
                f"size({legacy}) == 0",
                f"'Pod uses a legacy service account token: volume ' + {legacy}.map(v, v.name).join(', ') + "
                "'. Legacy tokens never expire and are not bound to an audience, so anyone who reads one can "
                "replay it anywhere. Fix: remove the volume and its volumeMounts; if it was mounted automatically, "
                "set automountServiceAccountToken: false on the Pod or its ServiceAccount.' + "
                f"(variables.requested ? '' : {cel_string(opt_in)})",
                annotated=c.legacy_token_scope == "annotated",
                reason="Forbidden",
                of_pod=True,
            )
        if c.strict:
            api_volumes = (
                "variables.volumes.filter(v, v.?projected.?sources.orValue([]).exists(s, "
                "has(s.serviceAccountToken) && s.serviceAccountToken.?audience.orValue('') == ''))"
            )
            rule(
                f"size({api_volumes}) == 0",
                f"'Pod still automounts the Kubernetes API token (volume ' + {api_volumes}.map(v, v.name).join(', ') + "
                "'), and this cluster\\'s token-projector runs in strict mode: a Pod that asks for an audience token "
                "should not also hold an API credential. Fix: set automountServiceAccountToken: false in the Pod spec "
                f"(or on its ServiceAccount); the tokens stay in {c.token_dir}.'",
                reason="Forbidden",
                of_pod=True,
            )
        rule(
            "variables.skipped.all(n, n in variables.containerNames)",
            f"'annotation {self.skip_key} names ' + "
            f"{_shown('variables.skipped.filter(n, !(n in variables.containerNames)).join(' + cel_string(', ') + ')')}"
            " + ', which the Pod does not have; its containers are ' + variables.containerNames.join(', ')",
        )
        volume_name = cel_string(c.volume_name)
        ours = (
            "has(v.projected) && size(v.projected.?sources.orValue([])) == size(variables.files) && "
            "lists.range(size(variables.files)).all(i, has(v.projected.sources[i].serviceAccountToken) && "
            "v.projected.sources[i].serviceAccountToken.?audience.orValue('') == variables.files[i][0] && "
            "v.projected.sources[i].serviceAccountToken.?path.orValue('') == variables.files[i][1] && "
            f"v.projected.sources[i].serviceAccountToken.?expirationSeconds.orValue({DEFAULT_EXPIRATION_SECONDS}) "
            "== variables.expiration)"
        )
        rule(
            f"variables.volumes.filter(v, v.name == {volume_name}).all(v, {ours})",
            f"'Pod already has a volume named {c.volume_name} that is not the projected token volume for ' + "
            f"{_shown('variables.audiences.join(' + cel_string(', ') + ')')} + '; token-projector needs that name "
            "for the token volume: rename the Pod\\'s volume'",
            of_pod=True,
        )
        at_mount = self._same_path("m.mountPath", c.mount_path)
        conflicts = " + ".join(
            f"variables.{kind}.filter(c, !(c.name in variables.skipped) && "
            f"c.?volumeMounts.orValue([]).exists(m, {at_mount}) && "
            f"c.volumeMounts.filter(m, {at_mount})[0].name != {volume_name}).map(c, c.name)"
            for kind in ("initContainers", "containers")
        )
        rule(
            f"size({conflicts}) == 0",
            f"'container ' + ({conflicts}).join(', ') + ' already mounts another volume at {c.mount_path}, where "
            "token-projector mounts the token; move that mount, or leave the container out with the annotation "
            f"{self.skip_key}: <container>'",
            of_pod=True,
        )
        return rules

    def _legacy_volumes(self) -> str:
        """``webhook.core.legacy.find_legacy_tokens`` in CEL: the Pod's Secret volumes that hold an API token."""
        account = (
            "object.spec.?serviceAccountName.orValue('') != '' ? object.spec.serviceAccountName : "
            "object.spec.?serviceAccount.orValue('') != '' ? object.spec.serviceAccount : 'default'"
        )
        mounts = (
            "(variables.initContainers.map(c, c.?volumeMounts.orValue([]).map(m, [m.name, m.mountPath])).flatten() + "
            "variables.containers.map(c, c.?volumeMounts.orValue([]).map(m, [m.name, m.mountPath])).flatten())"
        )
        at_api_path = f"{mounts}.exists(m, m[0] == v.name && {self._same_path('m[1]', SERVICE_ACCOUNT_MOUNT_PATH)})"
        secret = "v.secret.?secretName.orValue('')"
        named_like_token = (
            f"({secret}.startsWith({account}) && {secret}.substring(size({account})).matches('^-token-[a-z0-9]{{5}}$'))"
        )
        return f"variables.volumes.filter(v, has(v.secret) && ({at_api_path} || {named_like_token}))"


def _shown(expression: str) -> str:
    """A CEL string expression quoted for a message and cut as ``webhook.core.messages.shown`` cuts."""
    return (
        f"strings.quote(size({expression}) > {SHOWN_CHARACTERS} ? "
        f"({expression}).substring(0, {SHOWN_CHARACTERS}) + '...' : {expression})"
    )


def _token_file_folded(contract: Contract) -> tuple[str, list[str]]:
    """The token file as ``Contract.colliding_files`` compares names with it, and its directories."""
    return contract._token_file_folded, sorted(contract._token_file_dirs)
