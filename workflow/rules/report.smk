# Aggregate tables, drift metrics and the report figures. Plots read only aggregated tables, so
# changing a figure never reruns a probe.


rule aggregate:
    input:
        STANCE_FILES,
    output:
        by_question=f"{R}/aggregate/stances_by_question.parquet",
        by_question_csv=f"{R}/aggregate/stances_by_question.csv",
        distributions=f"{R}/aggregate/stance_distributions.parquet",
        distributions_csv=report(
            f"{R}/aggregate/stance_distributions.csv",
            caption="../report/stance_distributions.rst",
            category="Tables",
        ),
        by_seed=f"{R}/aggregate/stance_distributions_by_seed.parquet",
        by_seed_csv=f"{R}/aggregate/stance_distributions_by_seed.csv",
    params:
        n_boot=config["metrics"]["bootstrap_samples"],
        confidence=config["metrics"]["confidence"],
        seed=config["seed"],
    log:
        f"{R}/logs/aggregate.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "valuedrift aggregate {input:q} --by-question {output.by_question:q} "
        "--distributions {output.distributions:q} --distributions-by-seed {output.by_seed:q} "
        "--bootstrap-samples {params.n_boot:q} "
        "--confidence {params.confidence:q} --seed {params.seed:q} > {log:q} 2>&1"


rule drift:
    input:
        by_question=rules.aggregate.output.by_question,
        training_health=f"{R}/report/training_health_summary.csv",
    output:
        table=report(f"{R}/report/drift.csv", caption="../report/drift.rst", category="Tables"),
        summary=report(
            f"{R}/report/drift_summary.csv", caption="../report/drift_summary.rst", category="Tables"
        ),
        by_seed=report(f"{R}/report/drift_by_seed.csv", caption="../report/drift.rst", category="Tables"),
        by_snapshot=report(f"{R}/report/drift_by_snapshot.csv", caption="../report/drift_vs_kl.rst", category="Tables"),
    params:
        n_boot=config["metrics"]["bootstrap_samples"],
        confidence=config["metrics"]["confidence"],
        seed=config["seed"],
    log:
        f"{R}/logs/drift.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "valuedrift drift --by-question {input.by_question:q} --output {output.table:q} --summary {output.summary:q} "
        "--by-seed {output.by_seed:q} --by-snapshot {output.by_snapshot:q} --training-health {input.training_health:q} "
        "--bootstrap-samples {params.n_boot:q} --confidence {params.confidence:q} --seed {params.seed:q} > {log:q} 2>&1"


rule plot:
    input:
        distributions=rules.aggregate.output.distributions,
        by_seed=rules.aggregate.output.by_seed,
        drift=rules.drift.output.table,
        by_snapshot=rules.drift.output.by_snapshot,
    output:
        trajectories=report(
            f"{R}/report/trajectories.png", caption="../report/trajectories.rst", category="Figures"
        ),
        by_topic=report(
            f"{R}/report/trajectories_by_topic.png",
            caption="../report/trajectories_by_topic.rst",
            category="Figures",
        ),
        heatmap=report(
            f"{R}/report/drift_heatmap.png", caption="../report/drift_heatmap.rst", category="Figures"
        ),
        by_algorithm=report(
            f"{R}/report/drift_by_algorithm.png",
            caption="../report/drift_by_algorithm.rst",
            category="Figures",
        ),
        vs_kl=report(f"{R}/report/drift_vs_kl.png", caption="../report/drift_vs_kl.rst", category="Figures"),
    log:
        f"{R}/logs/plot.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "valuedrift plot --distributions {input.distributions:q} --distributions-by-seed {input.by_seed:q} "
        "--drift {input.drift:q} --drift-by-snapshot {input.by_snapshot:q} --drift-vs-kl {output.vs_kl:q} "
        "--trajectories {output.trajectories:q} --trajectories-by-topic {output.by_topic:q} "
        "--drift-heatmap {output.heatmap:q} --drift-by-algorithm {output.by_algorithm:q} > {log:q} 2>&1"


rule training_health:
    input:
        states=[f"{R}/{run.path}/trainer_state.json" for run in TRAINED_RUNS],
    output:
        table=report(f"{R}/report/training_health.csv", caption="../report/training_health.rst", category="Training"),
        summary=report(
            f"{R}/report/training_health_summary.csv", caption="../report/training_health.rst", category="Training"
        ),
        figure=report(f"{R}/report/training_health.png", caption="../report/training_health.rst", category="Training"),
    params:
        tags=as_json([run.tags(config) for run in TRAINED_RUNS]),
    log:
        f"{R}/logs/training_health.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "valuedrift training-health --states {input.states:q} --tags {params.tags:q} --table {output.table:q} "
        "--summary {output.summary:q} --figure {output.figure:q} > {log:q} 2>&1"


rule judge_sensitivity:
    input:
        [stance_files(judge) for judge in PROBE_JUDGES],
    output:
        report(f"{R}/report/judge_sensitivity.csv", caption="../report/judge_sensitivity.rst", category="Tables"),
    params:
        main=JUDGE,
        n_boot=config["metrics"]["bootstrap_samples"],
        confidence=config["metrics"]["confidence"],
        seed=config["seed"],
    log:
        f"{R}/logs/judge_sensitivity.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "valuedrift judge-sensitivity {input:q} --main {params.main:q} --table {output:q} "
        "--bootstrap-samples {params.n_boot:q} --confidence {params.confidence:q} --seed {params.seed:q} > {log:q} 2>&1"
