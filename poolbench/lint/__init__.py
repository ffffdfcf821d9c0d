"""`poolbench lint`: a static census of the engines a codebase creates."""
