"""Whisper's tokenizer: the byte-level BPE of tokenizer.json plus Whisper's special tokens
(start of transcript, language, task, timestamps) and the token sets decoding suppresses.

Timestamp tokens (<|0.00|> ... <|30.00|>) follow <|notimestamps|> in the model's vocabulary;
older tokenizer.json files do not list them, so their ids are computed, never looked up.
"""

from __future__ import annotations

from pathlib import Path

# openai-whisper's language table, in vocabulary order (token <|code|> follows <|startoftranscript|>).
LANGUAGES = dict(pair.split(":") for pair in (
    "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese "
    "pt:portuguese tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian "
    "id:indonesian hi:hindi fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay "
    "cs:czech ro:romanian da:danish hu:hungarian ta:tamil no:norwegian th:thai ur:urdu hr:croatian "
    "bg:bulgarian lt:lithuanian la:latin mi:maori ml:malayalam cy:welsh sk:slovak te:telugu "
    "fa:persian lv:latvian bn:bengali sr:serbian az:azerbaijani sl:slovenian kn:kannada "
    "et:estonian mk:macedonian br:breton eu:basque is:icelandic hy:armenian ne:nepali mn:mongolian "
    "bs:bosnian kk:kazakh sq:albanian sw:swahili gl:galician mr:marathi pa:punjabi si:sinhala "
    "km:khmer sn:shona yo:yoruba so:somali af:afrikaans oc:occitan ka:georgian be:belarusian "
    "tg:tajik sd:sindhi gu:gujarati am:amharic yi:yiddish lo:lao uz:uzbek fo:faroese ht:haitian "
    "ps:pashto tk:turkmen nn:nynorsk mt:maltese sa:sanskrit lb:luxembourgish my:myanmar bo:tibetan "
    "tl:tagalog mg:malagasy as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa ba:bashkir "
    "jw:javanese su:sundanese yue:cantonese").split())
_BY_NAME = {name: code for code, name in LANGUAGES.items()}
_ALIASES = {"iw": "he"}
NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte <-> printable character table (byte-level BPE), inverted."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


_BYTE_OF = _byte_decoder()


class TokenizerError(ValueError):
    pass


def language_code(language: str | None) -> str | None:
    """'en', 'English', 'english' -> 'en'; None stays None; anything else raises ValueError."""
    if language is None or language == "":
        return None
    key = language.strip().lower()
    if key in LANGUAGES:
        return key
    if key in _BY_NAME:
        return _BY_NAME[key]
    raise ValueError(f"unknown language '{language}'; use an ISO 639-1 code such as 'en' or 'fr'")


class WhisperTokenizer:
    def __init__(self, path: str | Path, n_vocab: int):
        from tokenizers import Tokenizer

        self.bpe = Tokenizer.from_file(str(path))
        self.bpe.no_padding()
        self.n_vocab = n_vocab
        self.multilingual = n_vocab >= 51865

        def special(name: str) -> int:
            i = self.bpe.token_to_id(name)
            if i is None:
                raise TokenizerError(f"{path} has no {name} token: not a Whisper tokenizer")
            return i

        self.eot = special("<|endoftext|>")
        self.sot = special("<|startoftranscript|>")
        self.translate = special("<|translate|>")
        self.transcribe = special("<|transcribe|>")
        self.sot_lm = special("<|startoflm|>")
        self.sot_prev = special("<|startofprev|>")
        self.no_speech = self.bpe.token_to_id("<|nospeech|>") or special("<|nocaptions|>")
        self.no_timestamps = special("<|notimestamps|>")
        self.timestamp_begin = self.no_timestamps + 1
        # Languages the model knows: the ids between <|startoftranscript|> and <|translate|>,
        # named by the tokenizer itself (some spell Hebrew <|iw|>, its pre-1989 code).
        self.language_tokens = {}
        for i in range(self.sot + 1, self.translate):
            name = self.bpe.id_to_token(i) or ""
            if not (name.startswith("<|") and name.endswith("|>")):
                raise TokenizerError(f"{path}: token {i} is {name!r}, expected a language token")
            code = _ALIASES.get(name[2:-2], name[2:-2])
            self.language_tokens[code] = i
        self.text_vocab = self.eot  # ids below eot are text

    def encode(self, text: str) -> list[int]:
        return self.bpe.encode(text, add_special_tokens=False).ids

    def decode(self, tokens: list[int]) -> str:
        return self.bpe.decode([t for t in tokens if t < self.eot], skip_special_tokens=False)

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes a text token stands for (byte-level BPE maps each byte to a printable
        character; this undoes that mapping)."""
        return bytes(_BYTE_OF.get(c, 32) for c in (self.bpe.id_to_token(token) or ""))

    def sot_sequence(self, language: str | None, task: str) -> list[int]:
        """<|startoftranscript|> [<|lang|> <|task|>] (English-only models take neither)."""
        if not self.multilingual:
            return [self.sot]
        seq = [self.sot]
        if language is not None:
            seq.append(self.language_tokens[language])
        seq.append(self.translate if task == "translate" else self.transcribe)
        return seq

    def non_speech_tokens(self) -> list[int]:
        """Tokens of symbols that are never speech (openai-whisper's list, rebuilt from the
        vocabulary), so ASCII art and music notes cannot be sampled."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
        misc = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + sorted(misc):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in misc:
                    result.add(tokens[0])
        return sorted(result)

    def suppress_tokens(self, non_speech: list[int] | None = None) -> list[int]:
        """Never sampled: non-speech symbols (the checkpoint's list when it has one) and the
        control tokens."""
        non_speech = self.non_speech_tokens() if non_speech is None else non_speech
        return sorted(set(non_speech) | {
            self.translate, self.transcribe, self.sot, self.sot_prev, self.sot_lm, self.no_speech})

    def split_words(self, tokens: list[int], language: str | None) -> tuple[list[str], list[list[int]]]:
        """Text tokens -> words and the tokens of each (for word timestamps)."""
        pieces, piece_tokens, pending = [], [], []
        for t in tokens:
            pending.append(t)
            text = self.bpe.decode([x for x in pending if x < self.eot]) if t < self.eot else ""
            if t >= self.eot or "\ufffd" not in text:
                pieces.append(text)
                piece_tokens.append(pending)
                pending = []
        if language in NO_SPACE_LANGUAGES:
            return pieces, piece_tokens
        words, word_tokens = [], []
        punctuation = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
        for piece, toks in zip(pieces, piece_tokens):
            starts_word = piece.startswith(" ") or piece.strip() in punctuation or not words
            if starts_word or toks[0] >= self.eot:
                words.append(piece)
                word_tokens.append(list(toks))
            else:
                words[-1] += piece
                word_tokens[-1].extend(toks)
        return words, word_tokens


def find_tokenizer(path: Path) -> Path | None:
    for name in ("tokenizer.json",):
        if (path / name).is_file():
            return path / name
    return None
