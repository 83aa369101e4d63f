"""Training algorithms, one readable file each: sft, reward_model, ppo, grpo (pg family), dpo."""
