"""The ImageModelDeployment API: its models and the CRD generated from them."""
