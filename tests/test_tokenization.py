import json

from l2s_lib import tiny
from l2s_lib.tokenization import PROBE, load_tokenizer


def test_a_custom_tokenizer_on_a_qwen2_model_keeps_its_pre_tokenizer(tmp_path):
    """A digit-level WordLevel tokenizer saved beside a Qwen2 config must encode as its tokenizer.json says."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<pad>", "<eos>", "<unk>", " ", "\n"] + [str(d) for d in range(10)] + [" " + str(d) for d in range(10)]
    pieces += list("QAHelowrdWaitmcbx+=-:.\\{}") + [" Wait", " let", " me", " double-check", " Hello", " world"]
    vocab = {p: i for i, p in enumerate(dict.fromkeys(pieces))}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split(pattern=Regex(r" ?[A-Za-z]+(?:-[A-Za-z]+)*| ?\d|\s|[^A-Za-z\d\s]"),
                                             behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    model_dir = tiny.make_model(tmp_path / "m", tokenizer=False, vocab_size=len(vocab))
    fast.save_pretrained(model_dir)
    tok = load_tokenizer(model_dir)
    assert tok.encode(PROBE, add_special_tokens=False) == raw.encode(PROBE, add_special_tokens=False).ids
    assert tok.convert_ids_to_tokens(tok.encode("Q: 58+22\nA:", add_special_tokens=False)) == [
        "Q", ":", " 5", "8", "+", "2", "2", "\n", "A", ":"]


def test_an_ordinary_tokenizer_is_left_to_autotokenizer(tiny_pair):
    tok = load_tokenizer(tiny_pair[0])
    assert tok.decode(tok.encode(PROBE, add_special_tokens=False)) == PROBE
    assert json.loads((tiny_pair[0] / "config.json").read_text())["model_type"] == "qwen2"
