"""Caption grammars for Japanese and Chinese: verb-final (ja) and topic-first (zh) word
order, counters and measure words rather than English order.

Japanese counts notes with つ (「音を三つ」, 「三つの高い音」) and repetitions with 回;
a fronted 「〜をバックに」 or 「〜中」 carries the background, or a second sentence
(「背景には波の音が聞こえる。」). Chinese counts with 个 (「两个音」, never 二个), 一串 for
an uncounted run of notes, 次 for repetitions, and picks the playing verb by instrument
family (吹 winds, 拉 bowed strings, 弹 keyboards and plucked strings, 敲 mallets and
steel drums, 唱 choir).

Templates, in meaning parallel to captions_germanic:
  0  「フルートが低音域で、ゆっくりと上がっていく音を三つ、やわらかく奏でる。背景には…」
     「长笛在低音区轻柔地吹出三个缓慢上行的音，背景是海浪声。」
  1  「波の音をバックに、フルートが三つのやわらかな低い音で、ゆっくりと上がっていく
      フレーズを奏でる。」
     「在海浪声中，长笛吹出三个轻柔的低音，缓缓上行。」
  2  「鳥がさえずる中、フルートで奏でられる三つの高い音が、やわらかく、ゆっくりと上がっていく。」
     「长笛吹出的三个高音轻柔而缓慢地上行，同时鸟儿在鸣叫。」
"""

from __future__ import annotations

from atri.training.corpus.captions_base import Ctx, Realizer

RTF = "rising then falling"


def _cat(*parts: str | None) -> str:
    return "".join(p for p in parts if p)


class Japanese(Realizer):
    def verb(self, c: Ctx, has_object: bool) -> str:
        if c.inst.get("sings"):
            return "歌う"
        return "奏でる" if has_object else "演奏する"

    def t0(self, c: Ctx) -> str:
        d, t, n = c.get("direction"), c.get("tempo"), c.get("n_notes")
        if d in ("rising", "falling", RTF):
            head = _cat(c.opt("tempo_adv", "tempo"), c.word("direction_rel", d), "音")
            count = c.opt("number", "n_notes")
        elif d == "repeated":
            head = _cat(c.opt("tempo_adj", "tempo"), "同じ高さの音")
            count = c.opt("number", "n_notes") or "繰り返し"
        elif t or n:
            head = _cat(c.opt("tempo_adj", "tempo"), "音")
            count = c.opt("number", "n_notes")
        else:
            head = count = None
        loud, reg = c.opt("loud_adv", "loudness"), c.opt("register_pp", "register")
        text = c.inst["noun"] + ("だけが" if c.alone else "が") + (reg or "")
        if head:
            text += ("、" if reg else "") + _cat(head, "を", count) + ("、" + loud if loud else "")
        else:
            text += loud or ""
        text += self.verb(c, has_object=bool(head)) + "。"
        bg = c.get("background")
        if bg and bg != "none":
            text += c.word("bg_end", bg) + "。"
        return text

    def t1(self, c: Ctx) -> str:
        d, n = c.get("direction"), c.get("n_notes")
        t_adv = c.opt("tempo_adv", "tempo")
        adjs = _cat(c.opt("loud_adj", "loudness"), c.opt("register_adj", "register"))
        count = c.word("number", n) + "の" if n else ""
        pace = "、" + t_adv if t_adv else None
        if d == "repeated":
            times = c.word("times", n) if n else "何度も"
            body = _cat("同じ", adjs, "音を", times, pace, self.verb(c, True))
        elif d:  # "plays, with three soft low notes, a phrase that slowly rises"
            notes = count + adjs + "音で、" if count or adjs else ""
            body = _cat(notes, t_adv, c.word("direction_rel", d), "フレーズを", self.verb(c, True))
        elif count or adjs:
            body = _cat(count, adjs, "音を", pace, self.verb(c, True))
        else:
            body = _cat(t_adv, self.verb(c, False))
        front = c.opt("bg_front", "background")
        return _cat(front and front + "、", c.inst["noun"], "が", body, "。")

    def t2(self, c: Ctx) -> str:
        d, n = c.get("direction"), c.get("n_notes")
        noun = c.inst["noun"]
        by = noun + ("が歌う" if c.inst.get("sings") else "で奏でられる")
        reg = c.opt("register_adj", "register") or ""
        if d == "repeated":
            subj = _cat(by, "同じ", reg, "音が")
            vp = _cat(c.word("times", n) if n else "何度も", "繰り返される")
        else:
            subj = _cat(by, c.word("number", n) + "の" if n else None, reg, "音が")
            vp = c.word("direction_pred", d) if d else "響く"
        adv = "、".join(
            a for a in (c.opt("loud_adv", "loudness"), c.opt("tempo_adv", "tempo")) if a
        )
        front = c.opt("bg_while", "background")
        return _cat(front and front + "、", subj, adv and "、" + adv, vp, "。")


class Chinese(Realizer):
    def t0(self, c: Ctx) -> str:
        inst, d = c.inst, c.get("direction")
        tempo = c.opt("tempo_adj", "tempo") or ""
        mod = tempo + c.word("direction_adj", d) if d in ("rising", "falling") else tempo
        comment = c.word("direction_comment", d) if d in (RTF, "repeated") else None
        count = c.opt("number", "n_notes")
        if count or mod or comment:
            action = _cat(inst["verb"], "出", count or "一串", mod and mod + "的", "音")
        else:
            action = inst["play"]
        loud = c.opt("loud_adj", "loudness")
        text = _cat(
            inst["noun"],
            "独自" if c.alone else None,
            c.opt("register_pp", "register"),
            loud and loud + "地",
            action,
            comment and "，" + comment,
        )
        bg = c.get("background")
        if bg and bg != "none":
            text += "，" + c.word("bg_end", bg)
        return text + "。"

    def t1(self, c: Ctx) -> str:
        inst, d, n, t = c.inst, c.get("direction"), c.get("n_notes"), c.get("tempo")
        t_adv = c.opt("tempo_adv", "tempo")
        loud = c.opt("loud_adj", "loudness")
        note = _cat(loud and loud + "的", c.opt("register_noun", "register") or "音")
        if d == "repeated":
            if n:
                body = _cat(t_adv, "将同一个", note, inst["verb"], "了", c.word("times", n))
            else:
                body = _cat(t_adv, "反复", inst["play"], "同一个", note)
        elif d:
            pace = c.word("tempo_pred", t) if t else ("依次" if d != RTF else None)
            body = _cat(
                inst["verb"],
                "出",
                c.opt("number", "n_notes") or "一串",
                note,
                "，",
                pace,
                c.word("direction_pred", d),
            )
        elif n or loud or c.get("register"):
            body = _cat(t_adv, inst["verb"], "出", c.opt("number", "n_notes") or "一串", note)
        else:
            body = _cat(t_adv, inst["play"])
        front = c.opt("bg_front", "background")
        return _cat(front and front + "，", inst["noun"], body, "。")

    def t2(self, c: Ctx) -> str:
        inst, d, n, t = c.inst, c.get("direction"), c.get("n_notes"), c.get("tempo")
        by = inst["noun"] + inst["verb"] + "出的"
        note = c.opt("register_noun", "register") or "音"
        if d == "repeated":
            subj = by + "同一个" + note
            vp = "重复了" + c.word("times", n) if n else "反复响起"
        else:
            subj = _cat(by, c.opt("number", "n_notes"), note)
            vp = c.word("direction_pred", d) if d else "依次响起"
        loud = c.opt("loud_adj", "loudness")
        if loud and t and t != "moderate":  # "轻柔而缓慢地"
            adv = loud + "而" + c.word("tempo_adj", t) + "地"
        else:
            adv = _cat(loud and loud + "地", c.opt("tempo_adv", "tempo"))
        bg = c.opt("bg_while", "background")
        return _cat(subj, adv, vp, bg and "，" + bg, "。")
