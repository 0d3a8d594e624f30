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
        "--distributions {output.distributions:q} --bootstrap-samples {params.n_boot:q} "
        "--confidence {params.confidence:q} --seed {params.seed:q} > {log:q} 2>&1"


rule drift:
    input:
        by_question=rules.aggregate.output.by_question,
    output:
        table=report(f"{R}/report/drift.csv", caption="../report/drift.rst", category="Tables"),
        summary=report(
            f"{R}/report/drift_summary.csv", caption="../report/drift_summary.rst", category="Tables"
        ),
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
        "--bootstrap-samples {params.n_boot:q} --confidence {params.confidence:q} --seed {params.seed:q} > {log:q} 2>&1"


rule plot:
    input:
        distributions=rules.aggregate.output.distributions,
        drift=rules.drift.output.table,
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
    log:
        f"{R}/logs/plot.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "valuedrift plot --distributions {input.distributions:q} --drift {input.drift:q} "
        "--trajectories {output.trajectories:q} --trajectories-by-topic {output.by_topic:q} "
        "--drift-heatmap {output.heatmap:q} --drift-by-algorithm {output.by_algorithm:q} > {log:q} 2>&1"
