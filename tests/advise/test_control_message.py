"""The control's words for tied finalists follow the measured losses, not the tie-break."""

from __future__ import annotations

from tailclip.advise.control import no_gain_message

AT = "at batch 512 (16x, noise scale x0.26)"


def test_a_tie_broken_for_the_second_best_does_not_call_a_kept_order_a_flip() -> None:
    """lm-acclip's advice: Adam recommended on a tie with CClip, CClip lower at both batches."""
    message = no_gain_message(("yours", "cclip"), (2.4535, 2.4432), (3.183, 2.902), AT)
    assert "cclip lower" in message and "cclip is lower as well" in message
    assert "flip" not in message


def test_a_tie_whose_leader_changes_with_the_batch_says_so() -> None:
    message = no_gain_message(("yours", "cclip"), (2.4535, 2.4432), (2.80, 2.90), AT)
    assert "cclip lower" in message and "yours is lower instead" in message
    assert message.endswith("final losses 2.8 and 2.9")
