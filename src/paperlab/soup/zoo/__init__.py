"""The offline category-expert zoo: synthetic function-calling tasks and tiny Llama candidates."""
