"""Real msclap model files with RANDOM weights, for contract tests that must not download anything.

These are not a trained CLAP: the weights are random (fixed seed) and the text model is a one-layer
GPT-2 with a tokenizer trained on a handful of phrases. They run the real msclap code (HTSAT audio
encoder, GPT-2 text encoder, projections) so tests can check wiring, shapes, windowing and
determinism; any similarity between their embeddings means nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TOKENIZER_PHRASES = [
    "a dog barking", "rain on a roof", "glass breaking on a tile floor", "a siren wailing",
    "people talking in a cafe", "a kick drum", "birds singing in the morning", "traffic noise",
    "an engine starting", "water running from a tap",
]


@dataclass(frozen=True)
class RandomClapFiles:
    """Paths of a random-weights msclap checkpoint and the tiny text-model folder it goes with."""

    weights: Path
    text_model: Path
    version: str = "2023"


def build_tiny_gpt2(folder: Path, seed: int = 0) -> Path:
    """A one-layer GPT-2 (n_embd=768, as msclap's projection expects) and a byte-level BPE
    tokenizer, saved so that AutoModel / AutoTokenizer load them. msclap only treats the text model
    as GPT-2 if 'gpt' is in its name, so the folder name must contain it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2Model, GPT2TokenizerFast

    assert "gpt" in folder.name, "msclap recognises GPT-2 text models by 'gpt' in the name"
    folder.mkdir(parents=True, exist_ok=True)

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # The 256-symbol byte alphabet comes first, so '!' gets id 0 as in GPT-2: msclap pads with '!'
    # and finds the last real token by counting ids != 0.
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    tokenizer.train_from_iterator(TOKENIZER_PHRASES, trainer)
    tokenizer.add_special_tokens(["<|endoftext|>"])
    fast = GPT2TokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>",
                             eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    assert fast.convert_tokens_to_ids("!") == 0
    fast.save_pretrained(folder)

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(fast), n_embd=768, n_layer=1, n_head=4, n_positions=128,
                        bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id)
    GPT2Model(config).save_pretrained(folder)
    return folder


def build_random_clap_weights(path: Path, text_model: Path, version: str = "2023", seed: int = 0) -> Path:
    """msclap's CLAP model for `version`, built from msclap's own config with random weights
    (fixed seed), saved in msclap's checkpoint format: torch.save({'model': state_dict})."""
    import torch
    from msclap.models.clap import CLAP

    from clapdex.encoder import msclap_config

    config = msclap_config(version)
    torch.manual_seed(seed)
    model = CLAP(audioenc_name=config["audioenc_name"], sample_rate=config["sampling_rate"],
                 window_size=config["window_size"], hop_size=config["hop_size"],
                 mel_bins=config["mel_bins"], fmin=config["fmin"], fmax=config["fmax"],
                 classes_num=config["num_classes"], out_emb=config["out_emb"],
                 text_model=str(text_model), transformer_embed_dim=config["transformer_embed_dim"],
                 d_proj=config["d_proj"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return path


def make_random_clap_files(root: Path, seed: int = 0) -> RandomClapFiles:
    """Both files under `root` (root/tiny-gpt2/ and root/clap_random_2023.pth)."""
    text_model = build_tiny_gpt2(root / "tiny-gpt2", seed=seed)
    weights = build_random_clap_weights(root / "clap_random_2023.pth", text_model, seed=seed)
    return RandomClapFiles(weights=weights, text_model=text_model)


def msclap_wrapper(files: RandomClapFiles, use_cuda: bool = False):
    """msclap's own CLAPWrapper, loaded by msclap's own code from these files. Its config names the
    hub text model ('gpt2'), which cannot be fetched offline, so only that one value is replaced by
    the local folder; everything else (config, checkpoint loading, tokenizer set-up) is msclap's."""
    from msclap.CLAPWrapper import CLAPWrapper

    class LocalTextModelCLAPWrapper(CLAPWrapper):
        def read_config_as_args(self, *args, **kwargs):
            config = super().read_config_as_args(*args, **kwargs)
            config.text_model = str(files.text_model)
            return config

    return LocalTextModelCLAPWrapper(model_fp=str(files.weights), version=files.version, use_cuda=use_cuda)
