"""What r1v hands to users and trainers: the output kinds (SFT rows, RL rows, preference pairs),
sharded Parquet, the dataset card, mixing recipes, and what a folder must hold to be published."""
