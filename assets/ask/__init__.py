"""The ask path: grounded, cited answers from the vector index, the knowledge graph and the served model.

    from assets.ask import ask
    answer = ask("Which applications run on servers managed by the Platform Team?")
    answer.answer, answer.citations, answer.sources, answer.graph_paths

CLI: python -m pipelines.ask "..." [--top-k 5] [--json]. Benchmark: python -m bench.ask.
"""

from assets.ask.core import MAX_QUESTION_CHARS, Answer, AskError, ask, build_sources, graph_expansion, retrieve, validate_question
from assets.ask.llm import AnswerClient, AnswerTimeout, ServerUnavailable, start_server_hint

__all__ = ["MAX_QUESTION_CHARS", "Answer", "AnswerClient", "AnswerTimeout", "AskError", "ServerUnavailable", "ask",
           "build_sources", "graph_expansion", "retrieve", "start_server_hint", "validate_question"]
