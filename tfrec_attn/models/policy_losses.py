"""Off-policy REINFORCE losses with the top-K correction (Chen et al., WSDM 2019).

A softmax policy `pi(a|s)` is trained from feedback logged under another policy `beta(a|s)`.
The off-policy gradient weights each logged `(s, a, r)` by `pi(a|s) / beta(a|s)`, capped at
`max_weight` to bound its variance (section 4.3); recommending `K` items at once multiplies it by
`lambda_K = K (1 - pi(a|s))^(K - 1)` (section 4.2), the derivative of `1 - (1 - pi)^K`, the
probability that `a` is among `K` independent draws. Both factors are constants for the gradient
(`stop_gradient`): the loss of one example is `-(w * lambda_K * r) * log pi(a|s)`.

Hand-written because no maintained TF library implements this estimator (TF-Agents'
`ReinforceAgent` is on-policy, TFRS has no policy losses).

Every function works on logits over the action axis (`(batch, num_actions)`) and integer actions
indexing that axis; the policy model maps item ids to that axis (ids below `FIRST_ITEM_ID` are not
actions).
"""

import math

from tfrec_attn._keras import tf
from tfrec_attn.models.losses import mask_seen_logits

# pi / beta with beta below this is the cap anyway; the floor only keeps 0 / 0 out of the graph.
MIN_BEHAVIOUR_PROBABILITY = 1e-12


def _check_k(top_k) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int. Received: top_k={top_k!r}")


def check_max_weight(max_weight) -> None:
    if isinstance(max_weight, bool) or not isinstance(max_weight, int | float) or not (
            max_weight > 0):
        raise ValueError(f"max_weight must be a positive number (math.inf for no cap). "
                         f"Received: max_weight={max_weight!r}")


def action_log_probabilities(logits: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
    """`log softmax(logits)[i, actions[i]]`, shape `(batch,)`.

    Example:
    >>> round(float(action_log_probabilities(tf.constant([[0.0, 0.0]]), tf.constant([1]))[0]), 4)
    -0.6931
    """
    return -tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(tf.reshape(actions, [-1]), tf.int32), logits=tf.cast(logits, tf.float32))


def importance_weights(policy_probs: tf.Tensor, behaviour_probs: tf.Tensor,
                       max_weight: float = math.inf) -> tf.Tensor:
    """Capped importance weights `min(pi / beta, max_weight)` (no gradient).

    Args:
        policy_probs: `pi(a|s)` of the logged actions, `(batch,)`.
        behaviour_probs: `beta(a|s)` of the logged actions, `(batch,)` (logged propensities or
            the behaviour head's estimate); floored at `MIN_BEHAVIOUR_PROBABILITY`.
        max_weight: the cap `c`; `math.inf` for none.

    Returns:
        `(batch,)` float32.

    Example:
    >>> importance_weights(tf.constant([0.3, 0.5]), tf.constant([0.6, 0.01]), 10.0).numpy()
    array([ 0.5, 10. ], dtype=float32)
    """
    check_max_weight(max_weight)
    policy_probs = tf.stop_gradient(tf.cast(policy_probs, tf.float32))
    behaviour_probs = tf.stop_gradient(tf.cast(behaviour_probs, tf.float32))
    ratio = policy_probs / tf.maximum(behaviour_probs, MIN_BEHAVIOUR_PROBABILITY)
    return tf.minimum(ratio, max_weight) if math.isfinite(max_weight) else ratio


def top_k_correction(policy_probs: tf.Tensor, top_k: int) -> tf.Tensor:
    """`lambda_K = K (1 - pi)^(K - 1)` (no gradient); all ones for `top_k=1`.

    Example:
    >>> top_k_correction(tf.constant([0.0, 0.5]), 3).numpy()
    array([3.  , 0.75], dtype=float32)
    """
    _check_k(top_k)
    policy_probs = tf.stop_gradient(tf.cast(policy_probs, tf.float32))
    return top_k * tf.pow(1.0 - policy_probs, float(top_k - 1))


def reinforce_loss(logits: tf.Tensor, actions: tf.Tensor, rewards: tf.Tensor,
                   behaviour_probs: tf.Tensor | None = None, top_k: int = 1,
                   max_weight: float = math.inf) -> tf.Tensor:
    """Per-example (off-policy, top-K corrected) REINFORCE losses `-(w lambda_K r) log pi(a|s)`.

    Args:
        logits: policy logits `(batch, num_actions)`.
        actions: logged actions `(batch,)`, indices into the action axis.
        rewards: logged rewards `(batch,)`.
        behaviour_probs: `beta(a|s)` of the logged actions `(batch,)`; `None` means no
            importance weighting (on-policy REINFORCE, biased on logged data).
        top_k: `K` of the top-K correction (`1`: none).
        max_weight: cap of the importance weights.

    Returns:
        `(batch,)` float32 losses; their mean's gradient is the estimator's.

    Example:
    >>> loss = reinforce_loss(tf.constant([[0.0, 0.0]]), tf.constant([0]), tf.constant([2.0]),
    ...                       behaviour_probs=tf.constant([0.25]))
    >>> round(float(loss[0]), 4)  # -(0.5 / 0.25) * 2 * log(0.5)
    2.7726
    """
    losses, _ = reinforce_terms(action_log_probabilities(logits, actions), rewards,
                                behaviour_probs, top_k, max_weight)
    return losses


def reinforce_terms(log_pi: tf.Tensor, rewards: tf.Tensor,
                    behaviour_probs: tf.Tensor | None = None, top_k: int = 1,
                    max_weight: float = math.inf) -> tuple[tf.Tensor, tf.Tensor | None]:
    """`reinforce_loss` from `log pi(a|s)` of the logged actions `(batch,)` (see
    `action_log_probabilities`), with the importance weights it used (`None` without
    `behaviour_probs`), so a caller that logs the weights computes the softmax once.

    Example:
    >>> losses, weights = reinforce_terms(tf.math.log([0.5]), tf.constant([2.0]),
    ...                                   behaviour_probs=tf.constant([0.25]))
    >>> round(float(losses[0]), 4), float(weights[0])
    (2.7726, 2.0)
    """
    _check_k(top_k)
    check_max_weight(max_weight)
    factor = tf.cast(tf.reshape(rewards, [-1]), tf.float32)
    weights = None
    if behaviour_probs is not None:
        weights = importance_weights(tf.exp(log_pi), tf.reshape(behaviour_probs, [-1]),
                                     max_weight)
        factor *= weights
    if top_k > 1:
        factor *= top_k_correction(tf.exp(log_pi), top_k)
    return -tf.stop_gradient(factor) * log_pi, weights


def behaviour_loss(behaviour_logits: tf.Tensor, actions: tf.Tensor,
                   excluded: tf.Tensor | None = None) -> tf.Tensor:
    """Per-example cross-entropy of the behaviour head on the logged actions, `(batch,)`.

    Its minimizer is the logging policy's `beta(a|s)` (maximum likelihood), which the
    importance weights need when the logs carry no propensities. With `excluded`, the softmax
    is over the other actions only (`exclude_actions`): the logging policy's candidates when
    it never shows those (a user's earlier items in a ratings log).

    Args:
        behaviour_logits: `(batch, num_actions)`.
        actions: logged actions `(batch,)`, indices into the action axis.
        excluded: optional boolean `(batch, num_actions)`: actions out of the softmax.

    Returns:
        `(batch,)` float32 `-log beta(a|s)`.

    Example:
    >>> round(float(behaviour_loss(tf.constant([[0.0, 0.0]]), tf.constant([1]))[0]), 4)
    0.6931
    >>> float(behaviour_loss(tf.constant([[0.0, 0.0]]), tf.constant([1]),
    ...                      excluded=tf.constant([[True, False]]))[0])
    0.0
    """
    if excluded is not None:
        behaviour_logits = exclude_actions(behaviour_logits, excluded, actions)
    return -action_log_probabilities(behaviour_logits, actions)


def exclude_actions(logits: tf.Tensor, excluded: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
    """`logits` with the `excluded` actions at `LARGE_NEGATIVE` (zero probability after the
    softmax, exactly in float32), except each row's logged action, which is kept: a logged
    action was a candidate of the logging policy (a rare repeat in a ratings log), and its
    probability must stay positive for the loss and the importance weights.

    Example:
    >>> logits = exclude_actions(tf.zeros((1, 3)), tf.constant([[True, True, False]]),
    ...                          tf.constant([0]))
    >>> tf.nn.softmax(logits).numpy().tolist()
    [[0.5, 0.0, 0.5]]
    """
    logged = tf.one_hot(tf.cast(tf.reshape(actions, [-1]), tf.int32), tf.shape(logits)[-1],
                        on_value=True, off_value=False)
    return mask_seen_logits(tf.cast(logits, tf.float32), excluded, logged)
