"""Research-only modes, apart from the training engine: a frozen trunk's features computed once
(:mod:`.features`) and head-only training on them (:mod:`.heads`), for screening head arms over many seeds in
minutes. ``scripts/head_seeds.py`` drives them; a normal run never imports this package."""
