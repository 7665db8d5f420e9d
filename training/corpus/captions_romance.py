"""Caption grammars for French, Spanish and Catalan: one grammar, three lexicons, and
per-language articles.

Agreement: "note/nota" is feminine, so adjectives on notes are feminine, singular for
"the same note" and plural otherwise ("trois notes graves", "la misma nota aguda",
Catalan "dues notes"); articles and "alone" agree with the instrument ("une flûte
seule", "un piano seul", "un arpa sola", "uns steel drums tots sols"); French contracts
à + le ("au piano", "à l'orgue d'église", but "à la harpe": h aspiré).

Templates (see captions_germanic for the plan):
  0  "Une flûte joue doucement trois notes lentes et ascendantes dans le grave, sur fond de ..."
  1  "Au son des vagues, une flûte joue trois notes douces et graves qui montent lentement."
  2  "Trois notes aiguës jouées à la flûte montent doucement et lentement, pendant que ..."
"""

from __future__ import annotations

from abc import abstractmethod

from atri.training.corpus.captions_base import (
    Ctx,
    Realizer,
    background_first,
    background_while,
    is_phrase,
    t0_sentence,
    tempo_beside_verb,
    words,
)

RTF = "rising then falling"


class _Romance(Realizer):
    # "Suenan unas notas…": an intransitive "sound" verb goes first in Spanish and Catalan
    SOUND_FIRST = False

    @abstractmethod
    def indefinite(self, inst: dict) -> str: ...

    @abstractmethod
    def on_instrument(self, inst: dict) -> str:
        """'on a flute' after 'played', or 'by a choir' after 'sung'."""

    def np(self, c: Ctx, head: str, mods: list[str | None]) -> str:
        """Head noun, single adjectives joined with "and", then multi-word modifiers."""
        adjs = [m for m in mods if m and not is_phrase(m)]
        phrases = [m for m in mods if m and is_phrase(m)]
        return words(head, f" {c.word('and')} ".join(adjs), *phrases)

    def subject(self, c: Ctx, alone: bool = False) -> str:
        inst = c.inst
        return words(self.indefinite(inst), c.word("alone")[inst["g"]] if alone else None)

    def verb(self, c: Ctx) -> str:
        inst, verbs = c.inst, c.word("verb")
        if inst.get("sings"):
            return verbs["sing"]
        return verbs["play_pl"] if inst["g"].endswith("pl") else verbs["play"]

    def notes(self, c: Ctx, subject: bool = False) -> str:
        n = c.opt("number", "n_notes")
        return (
            words(n, c.word("notes"))
            if n
            else c.word("some_notes_subj" if subject else "some_notes")
        )

    def adverbs(self, c: Ctx, loud: str | None, tempo: str | None) -> str | None:
        return f" {c.word('and')} ".join(a for a in (loud, tempo) if a) or None

    def t0(self, c: Ctx) -> str:
        d = c.get("direction")
        mods = [c.opt("tempo_adj", "tempo")]
        if d and d != RTF:
            mods.append(c.word("direction_adj", d))
        np = None
        if c.get("n_notes") or any(mods) or d:
            np = self.np(c, self.notes(c), mods)
            if d == RTF:
                np = words(np, c.word("rel"), c.word("direction_verb", d))
        return t0_sentence(
            c, self.subject(c, alone=c.alone), self.verb(c), c.opt("loud_adv", "loudness"), np
        )

    def t1(self, c: Ctx) -> str:
        d, n = c.get("direction"), c.get("n_notes")
        if d == "repeated":
            sg = [c.opt("loud_adj_sg", "loudness"), c.opt("register_adj_sg", "register")]
            times = c.word("times", n) if n else c.word("repeatedly")
            np = words(self.np(c, c.word("the_same_note"), sg), times)
        else:
            pl = [c.opt("loud_adj", "loudness"), c.opt("register_adj", "register")]
            np = self.np(c, self.notes(c), pl) if d or n or any(pl) else None
            if d:  # the tempo goes into the clause: "qui montent lentement"
                t_adv = c.opt("tempo_adv", "tempo")
                np = words(np, c.word("rel"), c.word("direction_verb", d), t_adv)
        pre, post = tempo_beside_verb(c, np)
        body = words(self.subject(c), self.verb(c), pre, np, post)
        return background_first(c, body)

    def t2(self, c: Ctx) -> str:
        inst, verbs = c.inst, c.word("verb")
        d, n = c.get("direction"), c.get("n_notes")
        part = "sung" if inst.get("sings") else "played"
        adv = self.adverbs(c, c.opt("loud_adv", "loudness"), c.opt("tempo_adv", "tempo"))
        if d == "repeated":
            head = self.np(c, c.word("the_same_note"), [c.opt("register_adj_sg", "register")])
            subj = words(head, verbs[part], self.on_instrument(inst))
            times = c.word("times", n) if n else c.word("repeatedly")
            body = words(subj, c.word("sound_sg"), adv, times)
        else:
            head = self.np(c, self.notes(c, subject=True), [c.opt("register_adj", "register")])
            subj = words(head, verbs[part + "_pl"], self.on_instrument(inst))
            if d:
                body = words(subj, c.word("direction_verb", d), adv)
            elif self.SOUND_FIRST:
                body = words(c.word("sound_pl"), adv, subj)
            else:
                body = words(subj, c.word("sound_pl"), adv)
        return background_while(c, body)


class French(_Romance):
    def indefinite(self, inst: dict) -> str:
        return ("une " if inst["g"] == "f" else "un ") + inst["noun"]

    def on_instrument(self, inst: dict) -> str:
        if inst.get("sings"):
            return "par " + self.indefinite(inst)
        if inst.get("elide"):
            return "à l'" + inst["noun"]
        return ("à la " if inst["g"] == "f" else "au ") + inst["noun"]


class Spanish(_Romance):
    SOUND_FIRST = True

    def indefinite(self, inst: dict) -> str:
        # "un arpa": feminine nouns with a stressed initial a take the masculine form
        art = {"m": "un", "f": "un" if inst.get("stressed_a") else "una", "m_pl": "unos"}
        return f"{art[inst['g']]} {inst['noun']}"

    def on_instrument(self, inst: dict) -> str:
        return ("por " if inst.get("sings") else "en ") + self.indefinite(inst)

    def adverbs(self, c: Ctx, loud: str | None, tempo: str | None) -> str | None:
        # two -mente adverbs share one suffix: "suave y lentamente"
        if loud and tempo and loud.endswith("mente") and tempo.endswith("mente"):
            return f"{loud[: -len('mente')]} y {tempo}"
        return super().adverbs(c, loud, tempo)


class Catalan(_Romance):
    SOUND_FIRST = True

    def indefinite(self, inst: dict) -> str:
        art = {"m": "un", "f": "una", "m_pl": "uns"}
        return f"{art[inst['g']]} {inst['noun']}"

    def on_instrument(self, inst: dict) -> str:
        return ("per " if inst.get("sings") else "en ") + self.indefinite(inst)
