"""Chinese text normalization: numbers, dates, times, percentages, units and symbols to words.

Follows the rules GPT-SoVITS takes from PaddleSpeech's zh_normalization, in the same order (the
order matters: dates before times before ranges before plain numbers). Notable behaviour kept for
parity: a bare number of three or more digits not followed by a measure word is read digit by
digit with 幺 for 1 ("幺二三"), years are read digit by digit, "2个" becomes "两个".
Not covered: traditional -> simplified conversion (traditional characters pass through).
"""

from __future__ import annotations

import re

DIGITS = dict(zip("0123456789", "零一二三四五六七八九"))
UNITS = [(8, "亿"), (4, "万"), (3, "千"), (2, "百"), (1, "十")]


def _value(s: str, use_zero: bool = True) -> list[str]:
    stripped = s.lstrip("0")
    if not stripped:
        return []
    if len(stripped) == 1:
        return [DIGITS["0"], DIGITS[stripped]] if use_zero and len(stripped) < len(s) else [DIGITS[stripped]]
    power, unit = next((p, u) for p, u in UNITS if p < len(stripped))
    return _value(s[:-power]) + [unit] + _value(s[-power:])


def cardinal(s: str) -> str:
    if not s:
        return ""
    s = s.lstrip("0")
    if not s:
        return DIGITS["0"]
    out = _value(s)
    if len(out) >= 2 and out[0] == "一" and out[1] == "十":  # 一十五 -> 十五
        out = out[1:]
    return "".join(out)


def digits(s: str, alt_one: bool = False) -> str:
    out = "".join(DIGITS[d] for d in s)
    return out.replace("一", "幺") if alt_one else out


def num2str(s: str) -> str:
    parts = s.split(".")
    if len(parts) > 2:
        raise ValueError(f"'{s}' has more than one decimal point")
    integer, decimal = parts[0], parts[1] if len(parts) == 2 else ""
    out = cardinal(integer)
    decimal = decimal.rstrip("0") + "0" if decimal.endswith("0") else decimal.rstrip("0")
    if decimal:
        out = (out or "零") + "点" + digits(decimal)
    return out


def _sign(neg: str, word: str = "负") -> str:
    return word if neg else ""


# -- dates and times ---------------------------------------------------------------------------
RE_DATE = re.compile(r"(\d{4}|\d{2})年((0?[1-9]|1[0-2])月)?(((0?[1-9])|((1|2)[0-9])|30|31)([日号]))?")
RE_DATE2 = re.compile(r"(\d{4})([- /.])(0[1-9]|1[012])\2(0[1-9]|[12][0-9]|3[01])")
_HM = r"([0-1]?[0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9]))?"
RE_TIME = re.compile(_HM)
RE_TIME_RANGE = re.compile(_HM + r"(~|-)" + _HM)


def _date(m) -> str:
    out = f"{digits(m.group(1))}年"
    if m.group(3):
        out += f"{cardinal(m.group(3))}月"
    if m.group(5):
        out += f"{cardinal(m.group(5))}{m.group(9)}"
    return out


def _date2(m) -> str:
    return f"{digits(m.group(1))}年{cardinal(m.group(3))}月{cardinal(m.group(4))}日"


def _clock_part(s: str) -> str:
    out = num2str(s.lstrip("0"))
    return DIGITS["0"] + out if s.startswith("0") else out


def _clock(hour, minute, second, half_from) -> str:
    out = f"{num2str(hour)}点"
    if minute.lstrip("0"):
        out += "半" if int(half_from) == 30 else f"{_clock_part(minute)}分"
    if second and second.lstrip("0"):
        out += f"{_clock_part(second)}秒"
    return out


def _time(m) -> str:
    g = m.groups()
    out = _clock(g[0], g[1], g[3], g[1])
    if len(g) > 5:  # a range; the reference tests the *first* minute for 半 in both halves
        out += "至" + _clock(g[5], g[6], g[8], g[1])
    return out


# -- numbers with context ------------------------------------------------------------------------
_UNIT = r"(%|°C|℃|度|摄氏度|cm2|cm²|cm3|cm³|cm|db|ds|kg|km|m2|m²|m³|m3|ml|m|mm|s)"
_NUM = r"((-?)((\d+)(\.\d+)?)|(\.(\d+)))"
RE_TO_RANGE = re.compile(_NUM + _UNIT + "[~]" + _NUM + _UNIT)
RE_TEMPERATURE = re.compile(r"(-?)(\d+(\.\d+)?)(°C|℃|度|摄氏度)")
MEASURES = {"cm2": "平方厘米", "cm²": "平方厘米", "cm3": "立方厘米", "cm³": "立方厘米", "cm": "厘米",
            "db": "分贝", "ds": "毫秒", "kg": "千克", "km": "千米", "m2": "平方米", "m²": "平方米",
            "m³": "立方米", "m3": "立方米", "ml": "毫升", "m": "米", "mm": "毫米", "s": "秒"}  # fmt: skip
_OPERAND = r"((-?)((\d+)(\.\d+)?[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*)|(\.\d+[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*)|([A-Za-z][⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*))"
RE_ASMD = re.compile(_OPERAND + r"([\+\-\×÷=])" + _OPERAND)
ASMD = {"+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等于"}
RE_POWER = re.compile(r"[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]+")
POWER = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ", "0123456789xyn"))
RE_FRAC = re.compile(r"(-?)(\d+)/(\d+)")
RE_PERCENTAGE = re.compile(r"(-?)(\d+(\.\d+)?)%")
RE_MOBILE = re.compile(r"(?<!\d)((\+?86 ?)?1([38]\d|5[0-35-9]|7[678]|9[89])\d{8})(?!\d)")
RE_TELEPHONE = re.compile(r"(?<!\d)((0(10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})(?!\d)")
RE_UNIFORM = re.compile(r"(400)(-)?\d{3}(-)?\d{4}")
RE_RANGE = re.compile(r"(?<![\d\+\-\×÷=])((-?)((\d+)(\.\d+)?))[-~]((-?)((\d+)(\.\d+)?))(?![\d\+\-\×÷=])")
RE_INTEGER = re.compile(r"(-)(\d+)")
RE_VERSION = re.compile(r"((\d+)(\.\d+)(\.\d+)?(\.\d+)+)")
RE_DECIMAL = re.compile(r"(-?)((\d+)(\.\d+))|(\.(\d+))")
QUANTIFIERS = ("(处|台|架|枚|趟|幅|平|方|堵|间|床|株|批|项|例|列|篇|栋|注|亩|封|艘|把|目|套|段|人|所|朵|匹|张|座|回|场|尾|条|个|首|阙|阵|网|炮|顶|丘|棵|只|支|袭|辆|挑|担|颗|壳|窠|曲|墙|群|腔|砣|座|客|贯|扎|捆|刀|令|打|手|罗|坡|山|岭|江|溪|钟|队|单|双|对|出|口|头|脚|板|跳|枝|件|贴|针|线|管|名|位|身|堂|课|本|页|家|户|层|丝|毫|厘|分|钱|两|斤|担|铢|石|钧|锱|忽|(千|毫|微)克|毫|厘|(公)分|分|寸|尺|丈|里|寻|常|铺|程|(千|分|厘|毫|微)米|米|撮|勺|合|升|斗|石|盘|碗|碟|叠|桶|笼|盆|盒|杯|钟|斛|锅|簋|篮|盘|桶|罐|瓶|壶|卮|盏|箩|箱|煲|啖|袋|钵|年|月|日|季|刻|时|周|天|秒|分|小时|旬|纪|岁|世|更|夜|春|夏|秋|冬|代|伏|辈|丸|泡|粒|颗|幢|堆|条|根|支|道|面|片|张|颗|块|元|(亿|千万|百万|万|千|百)|(亿|千万|百万|万|千|百|美|)元|(亿|千万|百万|万|千|百|十|)吨|(亿|千万|百万|万|千|百|)块|角|毛|分)")  # fmt: skip
RE_QUANTIFIED = re.compile(r"(\d+)([多余几\+])?" + QUANTIFIERS)
RE_DEFAULT_NUM = re.compile(r"\d{3}\d*")
RE_NUMBER = re.compile(r"(-?)((\d+)(\.\d+)?)|(\.(\d+))")


def _number(m) -> str:
    if m.group(5):
        return num2str(m.group(5))
    return _sign(m.group(1)) + num2str(m.group(2))


def _temperature(m) -> str:
    unit = "摄氏度" if m.group(4) == "摄氏度" else "度"
    return _sign(m.group(1), "零下") + num2str(m.group(2)) + unit


def _measures(s: str) -> str:
    for k, v in MEASURES.items():  # in this order: "cm2" before "cm" before "m"
        s = s.replace(k, v)
    return s


def _phone(m, mobile: bool) -> str:
    s = m.group(0)
    parts = s.strip("+").split() if mobile else s.split("-")
    return "，".join(digits(p, alt_one=True) for p in parts)


def _range(m) -> str:
    return RE_NUMBER.sub(_number, m.group(1)) + "到" + RE_NUMBER.sub(_number, m.group(6))


def _quantified(m) -> str:
    n = num2str(m.group(1))
    more = "多" if m.group(2) == "+" else (m.group(2) or "")
    return ("两" if n == "二" else n) + more + m.group(3)


def _version(m) -> str:
    return "".join("点" if c == "." else num2str(c) for c in m.group(1))


# -- sentences ------------------------------------------------------------------------------------
RE_SPLIT = re.compile(r"([：、，；。？！,;?!][”’]?)")
_FULLWIDTH = {ord(c) + 65248: ord(c) for c in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_FULLWIDTH[0x3000] = ord(" ")
_SYMBOL_WORDS = [("/", "每"), *zip("①②③④⑤⑥⑦⑧⑨⑩", "一二三四五六七八九十"), ("α", "阿尔法"), ("β", "贝塔"),
                 ("γ", "伽玛"), ("Γ", "伽玛"), ("δ", "德尔塔"), ("Δ", "德尔塔"), ("ε", "艾普西龙"), ("ζ", "捷塔"),
                 ("η", "依塔"), ("θ", "西塔"), ("Θ", "西塔"), ("ι", "艾欧塔"), ("κ", "喀帕"), ("λ", "拉姆达"),
                 ("Λ", "拉姆达"), ("μ", "缪"), ("ν", "拗"), ("ξ", "克西"), ("Ξ", "克西"), ("ο", "欧米克伦"),
                 ("π", "派"), ("Π", "派"), ("ρ", "肉"), ("ς", "西格玛"), ("Σ", "西格玛"), ("σ", "西格玛"),
                 ("τ", "套"), ("υ", "宇普西龙"), ("φ", "服艾"), ("Φ", "服艾"), ("χ", "器"), ("ψ", "普赛"),
                 ("Ψ", "普赛"), ("ω", "欧米伽"), ("Ω", "欧米伽"), ("+", "加"), ("-", "减"), ("×", "乘"),
                 ("÷", "除"), ("=", "等")]  # fmt: skip


def _sentences(text: str) -> list[str]:
    text = re.sub(r"[——《》【】<>{}()（）#&@“”^_|\\]", "", text.replace(" ", ""))
    text = RE_SPLIT.sub(r"\1\n", text).strip()
    return [s.strip() for s in re.split(r"\n+", text)]


def normalize_sentence(s: str) -> str:
    s = s.translate(_FULLWIDTH)
    s = RE_DATE.sub(_date, s)
    s = RE_DATE2.sub(_date2, s)
    s = RE_TIME_RANGE.sub(_time, s)
    s = RE_TIME.sub(_time, s)
    s = RE_TO_RANGE.sub(lambda m: m.group(0).replace("~", "至"), s)
    s = RE_TEMPERATURE.sub(_temperature, s)
    s = _measures(s)
    while RE_ASMD.search(s):
        s = RE_ASMD.sub(lambda m: m.group(1) + ASMD[m.group(8)] + m.group(9), s)
    s = RE_POWER.sub(lambda m: "的" + "".join(POWER[c] for c in m.group(0)) + "次方", s)
    s = RE_FRAC.sub(lambda m: _sign(m.group(1)) + num2str(m.group(3)) + "分之" + num2str(m.group(2)), s)
    s = RE_PERCENTAGE.sub(lambda m: _sign(m.group(1)) + "百分之" + num2str(m.group(2)), s)
    s = RE_MOBILE.sub(lambda m: _phone(m, True), s)
    s = RE_TELEPHONE.sub(lambda m: _phone(m, False), s)
    s = RE_UNIFORM.sub(lambda m: _phone(m, False), s)
    s = RE_RANGE.sub(_range, s)
    s = RE_INTEGER.sub(lambda m: _sign(m.group(1)) + num2str(m.group(2)), s)
    s = RE_VERSION.sub(_version, s)
    s = RE_DECIMAL.sub(_number, s)
    s = RE_QUANTIFIED.sub(_quantified, s)
    s = RE_DEFAULT_NUM.sub(lambda m: digits(m.group(0), alt_one=True), s)
    s = RE_NUMBER.sub(_number, s)
    for k, v in _SYMBOL_WORDS:
        s = s.replace(k, v)
    return re.sub(r"[-——《》【】<=>{}()（）#&@“”^_|\\]", "", s)


# -- punctuation to the v2 set --------------------------------------------------------------------
PUNCTUATION = "!?…,.-"
_PUNCT_MAP = {"：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",",
              "...": "…", "$": ".", "/": ",", "—": "-", "~": "…", "～": "…"}  # fmt: skip
_RE_PUNCT = re.compile("|".join(re.escape(p) for p in _PUNCT_MAP))
_RE_NOT_KEPT = re.compile(r"[^\u4e00-\u9fa5" + re.escape(PUNCTUATION) + r"]+")
_RE_REPEATS = re.compile(f"([{re.escape(PUNCTUATION)}])([{re.escape(PUNCTUATION)}])+")


def _punctuation(s: str) -> str:
    s = s.replace("嗯", "恩").replace("呣", "母")
    s = _RE_PUNCT.sub(lambda m: _PUNCT_MAP[m.group()], s)
    return _RE_NOT_KEPT.sub("", s)  # anything that is neither a CJK character nor v2 punctuation goes


def normalize(text: str) -> str:
    """Chinese text as the g2p reads it: words for numbers and symbols, v2 punctuation only, no
    latin letters, no repeated punctuation."""
    out = "".join(_punctuation(normalize_sentence(s)) for s in _sentences(text))
    return _RE_REPEATS.sub(r"\1", out)
