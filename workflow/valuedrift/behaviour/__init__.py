"""The behaviour probe: sample answers to value questions from a snapshot, then judge their stance."""
