"""Pure decision rules: which side is primary, whether a promotion may run, what status follows.

No I/O and no clock of their own (the time is passed in), so every rule is a unit test away.
Owns the topology (which side serves, which is fenced or stopped), the promotion rules and
the configuration rollout (reloads, the rolling restart).
May import ``api`` and ``kube`` names; the builders and the controller import these rules,
never the reverse.
"""
