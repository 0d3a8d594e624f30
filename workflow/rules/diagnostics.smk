# Diagnostics that need no training: the value gap of every preference set (do its chosen and
# rejected answers differ in stance?) and how far the judges agree with labels and each other.


rule judge_pairs:
    input:
        unpack(lambda w: judge_inputs(JUDGE)),
        pairs=f"{R}/data/preference/{{pref_data}}.jsonl",
    output:
        f"{R}/diagnostics/value_gap/{{pref_data}}.jsonl",
    params:
        judge=judge_args(JUDGE),
        keywords=lambda w: f"--keywords {shlex.quote(as_json(config['diagnostics']['value_keywords']))}"
        if "value_keywords" in config["diagnostics"] else "",
    threads: job_threads("judge")
    resources:
        **job_resources("judge"),
    log:
        f"{R}/logs/diagnostics/value_gap/{{pref_data}}.log",
    benchmark:
        f"{R}/benchmarks/diagnostics/value_gap/{{pref_data}}.tsv"
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift judge-pairs --pairs {input.pairs:q} {params.judge} {params.keywords} --output {output:q} > {log:q} 2>&1"


rule value_gap:
    input:
        expand(f"{R}/diagnostics/value_gap/{{pref_data}}.jsonl", pref_data=GRID["preference_datasets"]),
    output:
        table=report(f"{R}/report/value_gap.csv", caption="../report/value_gap.rst", category="Diagnostics"),
        figure=report(f"{R}/report/value_gap.png", caption="../report/value_gap.rst", category="Diagnostics"),
    params:
        n_boot=config["metrics"]["bootstrap_samples"],
        confidence=config["metrics"]["confidence"],
        seed=config["seed"],
    log:
        f"{R}/logs/diagnostics/value_gap.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "valuedrift value-gap {input:q} --table {output.table:q} --figure {output.figure:q} "
        "--bootstrap-samples {params.n_boot:q} --confidence {params.confidence:q} --seed {params.seed:q} > {log:q} 2>&1"


rule judge_labelled:
    input:
        unpack(lambda w: judge_inputs(w.judge)),
        labelled=labelled_answers(),
    output:
        f"{R}/diagnostics/judges/{{judge}}.jsonl",
    params:
        judge=lambda w, input: judge_args(w.judge)(w, input),
    threads: job_threads("judge")
    resources:
        **job_resources("judge"),
    log:
        f"{R}/logs/diagnostics/judges/{{judge}}.log",
    benchmark:
        f"{R}/benchmarks/diagnostics/judges/{{judge}}.tsv"
    conda:
        "../../envs/probe.yaml"
    shell:
        "valuedrift judge --generations {input.labelled:q} {params.judge} --output {output:q} > {log:q} 2>&1"


rule judge_report:
    input:
        expand(f"{R}/diagnostics/judges/{{judge}}.jsonl", judge=COMPARED_JUDGES),
    output:
        calibration=report(
            f"{R}/report/judge_calibration.csv", caption="../report/judge_report.rst", category="Diagnostics"
        ),
        agreement=report(
            f"{R}/report/judge_agreement.csv", caption="../report/judge_report.rst", category="Diagnostics"
        ),
    log:
        f"{R}/logs/diagnostics/judge_report.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "valuedrift judge-report {input:q} --calibration {output.calibration:q} --agreement {output.agreement:q} > {log:q} 2>&1"
