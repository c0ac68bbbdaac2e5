"""Hypothesis strategies and the harness of the fuzz tests (docs/testing.md): onnx_strategies,
config_strategies (configs, compile flags), target_strategies, defect_strategies, cli_strategies;
families.py says what each family runs, harness.py runs and classifies the cases."""
