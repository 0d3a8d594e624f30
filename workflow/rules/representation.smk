# The representation probe: for every snapshot of every run, hidden states of every layer on fixed
# held-out pair sets (`probe_pairs`: e.g. stance and quality), linear probes, similarity to the
# run's starting model, the policy's own margin on the pairs, and refit replicates for the report.


rule prepare_probe_pairs:
    output:
        f"{R}/data/probe_pairs/{{probe_set}}.jsonl",
    params:
        world=WORLD,
        settings=lambda w: as_json(probe_pairs_spec(config, w.probe_set)),
    log:
        f"{R}/logs/data/probe_pairs/{{probe_set}}.log",
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift prepare-data --kind probe-pairs --name {wildcards.probe_set:q} --world {params.world:q} "
        "--settings {params.settings:q} --output {output:q} > {log:q} 2>&1"


rule probe_representations:
    input:
        snapshots=[f"{R}/{{model}}/{{run}}/snapshots/{k}" for k in SNAPSHOTS],
        adapter_base=adapter_base,
        pairs=expand(rules.prepare_probe_pairs.output[0], probe_set=PROBE_SETS),
    output:
        probes=f"{R}/{{model}}/{{run}}/representation/probes.csv",
        refits=f"{R}/{{model}}/{{run}}/representation/refits.csv",
    params:
        run_dir=lambda w, input: Path(input.snapshots[0]).parent.parent,
        snapshots=K,
        pairs=lambda w, input: [f"{name}={path}" for name, path in zip(PROBE_SETS, input.pairs)],
        settings=as_json({k: v for k, v in config["representation"].items() if k in ("hidden", "probe")}),
        tags=run_tags,
        seed=config["seed"],
    threads: job_threads("probe")
    resources:
        **job_resources("probe"),
    log:
        f"{R}/logs/{{model}}/{{run}}/representation.log",
    benchmark:
        f"{R}/benchmarks/{{model}}/{{run}}/representation.tsv"
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift probe-representations --run-dir {params.run_dir:q} --snapshots {params.snapshots:q} "
        "--pairs {params.pairs:q} --settings {params.settings:q} --tags {params.tags:q} --seed {params.seed:q} "
        "--threads {threads:q} --output {output.probes:q} --refits {output.refits:q} > {log:q} 2>&1"


rule representation_report:
    input:
        probes=[f"{R}/{run.path}/representation/probes.csv" for run in REPRESENTATION_RUNS],
        refits=[f"{R}/{run.path}/representation/refits.csv" for run in REPRESENTATION_RUNS],
    output:
        table=f"{R}/aggregate/representation.csv",
        layers=report(
            f"{R}/report/representation_layers.csv", caption="../report/representation.rst", category="Representations"
        ),
        summary=report(
            f"{R}/report/representation_summary.csv", caption="../report/representation.rst", category="Representations"
        ),
        by_layer=report(
            f"{R}/report/representation_auroc_by_layer.png",
            caption="../report/representation.rst",
            category="Representations",
        ),
        layer_changes=report(
            f"{R}/report/representation_layer_changes.png",
            caption="../report/representation.rst",
            category="Representations",
        ),
        peak=report(
            f"{R}/report/representation_peak_change.png",
            caption="../report/representation.rst",
            category="Representations",
        ),
        cka=report(
            f"{R}/report/representation_cka.png", caption="../report/representation.rst", category="Representations"
        ),
    log:
        f"{R}/logs/representation_report.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "valuedrift representation-report --probes {input.probes:q} --refits {input.refits:q} "
        "--table {output.table:q} --layers {output.layers:q} --summary {output.summary:q} "
        "--auroc-by-layer {output.by_layer:q} --layer-changes {output.layer_changes:q} "
        "--peak-change {output.peak:q} --cka {output.cka:q} > {log:q} 2>&1"


# Sparse dictionaries of a run's start and end at each probe set's peak layer (the layer its
# representation probe chose on the selection prompts): an SAE (SAELens) and a crosscoder.
rule probe_features:
    input:
        start=f"{R}/{{model}}/{{run}}/snapshots/0",
        end=f"{R}/{{model}}/{{run}}/snapshots/{K}",
        adapter_base=adapter_base,
        pairs=expand(rules.prepare_probe_pairs.output[0], probe_set=PROBE_SETS),
        probes=rules.probe_representations.output.probes,
    output:
        features=f"{R}/{{model}}/{{run}}/representation/features.csv",
        shifts=f"{R}/{{model}}/{{run}}/representation/feature_shifts.csv",
    params:
        run_dir=lambda w, input: Path(input.start).parent.parent,
        snapshots=K,
        pairs=lambda w, input: [f"{name}={path}" for name, path in zip(PROBE_SETS, input.pairs)],
        settings=as_json(dictionary_settings(config)),
        tags=run_tags,
    threads: job_threads("probe")
    resources:
        **job_resources("probe"),
    log:
        f"{R}/logs/{{model}}/{{run}}/features.log",
    benchmark:
        f"{R}/benchmarks/{{model}}/{{run}}/features.tsv"
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift probe-features --run-dir {params.run_dir:q} --snapshots {params.snapshots:q} "
        "--pairs {params.pairs:q} --probes {input.probes:q} --settings {params.settings:q} --tags {params.tags:q} "
        "--threads {threads:q} --output {output.features:q} --shifts {output.shifts:q} > {log:q} 2>&1"


rule feature_report:
    input:
        [f"{R}/{run.path}/representation/features.csv" for run in FEATURE_RUNS],
    output:
        table=report(f"{R}/report/representation_features.csv", caption="../report/features.rst",
                     category="Representations"),
        figure=report(f"{R}/report/representation_features.png", caption="../report/features.rst",
                      category="Representations"),
    log:
        f"{R}/logs/feature_report.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "valuedrift feature-report {input:q} --table {output.table:q} --figure {output.figure:q} > {log:q} 2>&1"
