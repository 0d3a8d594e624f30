# valuedrift: how post-training shapes a language model's values.
#   data -> base model -> SFT (snapshots) -> preference optimization (snapshots)
#   (or checkpoints of runs trained elsewhere, imported as snapshots)
#   -> behaviour probe of every snapshot (generate, judge) -> aggregate -> drift metrics -> figures
#   -> representation probe of every snapshot (hidden states, layer-wise probes) -> summary, figures
#   -> sparse dictionaries (SAE, crosscoder) of a run's start and end at the peak layers
#   diagnostics before training: value gap of every preference set, judges against labels
# Run: snakemake --cores 2        Report: snakemake --report report.html
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/base_model.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/external.smk"
include: "workflow/rules/behaviour.smk"
include: "workflow/rules/diagnostics.smk"
include: "workflow/rules/representation.smk"
include: "workflow/rules/report.smk"


onstart:
    if API_CACHES:
        shell("valuedrift cache-merge {API_CACHES:q}")


onsuccess:
    if API_CACHES:
        shell("valuedrift cache-merge {API_CACHES:q}")


# light steps run on the submitting host, never as cluster jobs (and the evaluation prompts'
# rules in data.smk, whichever source the config picks)
localrules:
    all,
    prepare_pretrain_corpus,
    prepare_sft_data,
    prepare_preference_data,
    prepare_judge_data,
    prepare_value_questions,
    value_gap,
    judge_report,
    prepare_probe_pairs,
    representation_report,
    feature_report,
    aggregate,
    drift,
    plot,
    training_health,
    judge_sensitivity,


rule all:
    input:
        DIAGNOSTIC_FILES,
        REPORT_FILES,
        REPRESENTATION_FILES,
