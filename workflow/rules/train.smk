# Training phases. Each writes K+1 probe snapshot folders at fixed fractions of the phase (k=0 is
# its starting model), stored as `storage` says. Every phase of a replicate trains with its seed
# (`grid.seeds`); the top-level `seed` draws the data, never the training. Every phase logs its
# curves as `tracking` says, named by its run's grid path (valuedrift.grid.Run.path).

# absent: the defaults (TensorBoard); null: off
TRACKING = as_json(config.get("tracking", {}))


rule train_sft:
    input:
        data=f"{R}/data/sft/{{sft_data}}.jsonl",
        base=base_model_input,
    output:
        snapshot_dirs("{model}/seed-{seed}/sft-{sft_data}"),
        state=f"{R}/{{model}}/seed-{{seed}}/sft-{{sft_data}}/trainer_state.json",
    params:
        start=start_model,
        run_dir=f"{R}/{{model}}/seed-{{seed}}/sft-{{sft_data}}",
        run_name="{model}/seed-{seed}/sft-{sft_data}",
        tracking=TRACKING,
        settings=sft_settings,
        fractions=as_json(FRACTIONS),
        snapshot_dtype=config["storage"]["snapshot_dtype"],
        launch=launcher,
    threads: job_threads("train")
    resources:
        **job_resources("train"),
    log:
        f"{R}/logs/{{model}}/seed-{{seed}}/sft-{{sft_data}}/train.log",
    benchmark:
        f"{R}/benchmarks/{{model}}/seed-{{seed}}/sft-{{sft_data}}/train.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch} train --algorithm sft --model {params.start:q} --data {input.data:q} "
        "--run-dir {params.run_dir:q} --fractions {params.fractions:q} --snapshot-dtype {params.snapshot_dtype:q} --settings {params.settings:q} "
        "--tracking {params.tracking:q} --run-name {params.run_name:q} --seed {wildcards.seed:q} --threads {threads:q} > {log:q} 2>&1"


rule train_reward_model:
    input:
        data=f"{R}/data/preference/{{pref_data}}.jsonl",
        start=f"{R}/{{model}}/seed-{{seed}}/sft-{{sft_data}}/snapshots/{K}",
    output:
        snapshot_dirs("{model}/seed-{seed}/sft-{sft_data}/reward-{pref_data}"),
        state=f"{R}/{{model}}/seed-{{seed}}/sft-{{sft_data}}/reward-{{pref_data}}/trainer_state.json",
    params:
        run_dir=f"{R}/{{model}}/seed-{{seed}}/sft-{{sft_data}}/reward-{{pref_data}}",
        run_name="{model}/seed-{seed}/sft-{sft_data}/reward-{pref_data}",
        tracking=TRACKING,
        settings=as_json(config["reward_model"]),
        fractions=as_json(FRACTIONS),
        snapshot_dtype=config["storage"]["snapshot_dtype"],
        launch=launcher,
    threads: job_threads("train")
    resources:
        **job_resources("train"),
    log:
        f"{R}/logs/{{model}}/seed-{{seed}}/sft-{{sft_data}}/reward-{{pref_data}}/train.log",
    benchmark:
        f"{R}/benchmarks/{{model}}/seed-{{seed}}/sft-{{sft_data}}/reward-{{pref_data}}/train.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch} train --algorithm reward --model {input.start:q} --data {input.data:q} "
        "--run-dir {params.run_dir:q} --fractions {params.fractions:q} --snapshot-dtype {params.snapshot_dtype:q} --settings {params.settings:q} "
        "--tracking {params.tracking:q} --run-name {params.run_name:q} --seed {wildcards.seed:q} --threads {threads:q} > {log:q} 2>&1"


rule train_preference:
    input:
        unpack(reward_inputs),
        data=f"{R}/data/preference/{{pref_data}}.jsonl",
        start=f"{R}/{{model}}/seed-{{seed}}/sft-{{sft_data}}/snapshots/{K}",
    output:
        snapshot_dirs("{model}/seed-{seed}/sft-{sft_data}/{algorithm}-{pref_data}"),
        state=f"{R}/{{model}}/seed-{{seed}}/sft-{{sft_data}}/{{algorithm}}-{{pref_data}}/trainer_state.json",
    params:
        run_dir=f"{R}/{{model}}/seed-{{seed}}/sft-{{sft_data}}/{{algorithm}}-{{pref_data}}",
        run_name="{model}/seed-{seed}/sft-{sft_data}/{algorithm}-{pref_data}",
        tracking=TRACKING,
        method=method_of,
        settings=lambda w: as_json(grid.trainer_settings(config, w.algorithm)),
        reward=reward_args,
        lora=lambda w: as_json(config["lora"] if ALGORITHMS[method_of(w)].lora else None),
        fractions=as_json(FRACTIONS),
        snapshot_dtype=config["storage"]["snapshot_dtype"],
        launch=launcher,
    threads: job_threads("train")
    resources:
        **job_resources("train"),
    log:
        f"{R}/logs/{{model}}/seed-{{seed}}/sft-{{sft_data}}/{{algorithm}}-{{pref_data}}/train.log",
    benchmark:
        f"{R}/benchmarks/{{model}}/seed-{{seed}}/sft-{{sft_data}}/{{algorithm}}-{{pref_data}}/train.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launch} train --algorithm {params.method:q} --model {input.start:q} --data {input.data:q} "
        "--run-dir {params.run_dir:q} --fractions {params.fractions:q} --snapshot-dtype {params.snapshot_dtype:q} --settings {params.settings:q} "
        "{params.reward} --lora {params.lora:q} --tracking {params.tracking:q} --run-name {params.run_name:q} "
        "--seed {wildcards.seed:q} --threads {threads:q} > {log:q} 2>&1"


if SKIPPED_SFT:

    ruleorder: skip_sft > train_sft

    rule skip_sft:
        input:
            base=base_model_input,
        output:
            # kept whatever `storage` says: snapshots 1..K link to 0, which must outlive them
            snapshot_dirs("{model}/seed-{seed}/sft-{sft_data}", keep=True),
        wildcard_constraints:
            sft_data="|".join(SKIPPED_SFT),
        params:
            start=start_model,
            run_dir=lambda w, output: Path(output[0]).parent.parent,
            snapshots=K,
            snapshot_dtype=config["storage"]["snapshot_dtype"],
            chat_template=lambda w: f"--chat-template {shlex.quote(chat_template(w))}" if chat_template(w) else "",
        resources:
            **job_resources("probe"),
        log:
            f"{R}/logs/{{model}}/seed-{{seed}}/sft-{{sft_data}}/publish_start.log",
        conda:
            "../../envs/train.yaml"
        shell:
            "valuedrift publish-start --model {params.start:q} --run-dir {params.run_dir:q} --snapshots {params.snapshots:q} "
            "--snapshot-dtype {params.snapshot_dtype:q} {params.chat_template} > {log:q} 2>&1"
