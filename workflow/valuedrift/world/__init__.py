"""The miniature world: value questions written by us, a seeded generator of stance-labelled
answers, and the datasets derived from them with known stance mixtures."""
