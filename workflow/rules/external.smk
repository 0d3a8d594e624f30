# Runs trained elsewhere (`external_runs`): their checkpoint folders become the run's snapshots
# 0..K (linked, not copied) and its last trainer_state.json its training curves; from there they
# take the same probes, tables and figures as the runs trained here.

if EXTERNAL_RUNS:

    ruleorder: import_checkpoints > train_preference
    ruleorder: import_checkpoints > train_sft

    rule import_checkpoints:
        input:
            # the folders it reads, so that a checkpoint added or rewritten reruns the import
            checkpoints=lambda w: external_checkpoints(EXTERNAL_RUNS[w.external]),
        output:
            snapshot_dirs("{external}", keep=True),
            state=f"{R}/{{external}}/trainer_state.json",
        wildcard_constraints:
            external="|".join(re.escape(path) for path in EXTERNAL_RUNS),
        params:
            name=lambda w: EXTERNAL_RUNS[w.external],
            spec=lambda w: as_json(config["external_runs"][EXTERNAL_RUNS[w.external]]),
            fractions=as_json(FRACTIONS),
            run_dir=f"{R}/{{external}}",
        resources:
            **job_resources("probe"),
        log:
            f"{R}/logs/{{external}}/import.log",
        benchmark:
            f"{R}/benchmarks/{{external}}/import.tsv"
        conda:
            "../../envs/train.yaml"
        shell:
            "valuedrift import-checkpoints --name {params.name:q} --spec {params.spec:q} "
            "--fractions {params.fractions:q} --run-dir {params.run_dir:q} --state {output.state:q} > {log:q} 2>&1"
