# valuedrift: how post-training shapes a language model's values.
#   data -> base model -> SFT (snapshots) -> preference optimization (snapshots)
#   -> behaviour probe of every snapshot (generate, judge) -> aggregate -> drift metrics -> figures
# Run: snakemake --cores 2        Report: snakemake --report report.html
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/base_model.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/behaviour.smk"
include: "workflow/rules/report.smk"


# light steps run on the submitting host, never as cluster jobs
localrules:
    all,
    prepare_pretrain_corpus,
    prepare_sft_data,
    prepare_preference_data,
    prepare_eval_prompts,
    prepare_judge_data,
    aggregate,
    drift,
    plot,


rule all:
    input:
        REPORT_FILES,
