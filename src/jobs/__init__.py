"""The jobs the sweeper launches (a trial, the final stage) and a single run: what each computes and records in
MLflow. The sweeper's side of the contract is the plugin's README."""
