"""Caption grammars for English, German and Dutch.

The three templates, as English says them (the others follow the same plan in their own
syntax: German and Dutch put the verb second after a fronted phrase and last in
subordinate clauses, German inflects articles for case after prepositions):
  0  instrument first, notes described by adjectives, background last
     ("A flute softly plays three slow rising notes in a low register, with ...")
  1  background first, direction as a relative clause
     ("Over birdsong, a flute plays three soft low notes that slowly rise.")
  2  the notes are the subject, the instrument a participle phrase, background as a
     "while" clause ("Three high notes played on a flute rise softly and slowly while ...")
"""

from __future__ import annotations

from abc import abstractmethod

from atri.training.corpus.captions_base import (
    Ctx,
    Realizer,
    background_first,
    background_while,
    is_phrase,
    sentence,
    t0_sentence,
    tempo_beside_verb,
    words,
)

RTF = "rising then falling"


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


class English(Realizer):
    def subject(self, c: Ctx, lone: bool = False) -> str:
        inst = c.inst
        noun = words("lone" if lone else None, inst["noun"])
        return noun if inst.get("pl") else _a(noun)

    def verb(self, c: Ctx) -> str:
        base = "sing" if c.inst.get("sings") else "play"
        return base if c.inst.get("pl") else base + "s"

    def t0(self, c: Ctx) -> str:
        d = c.get("direction")
        mods = [c.opt("number", "n_notes"), c.opt("tempo_adj", "tempo")]
        if d and d != RTF:
            mods.append(c.word("direction_adj", d))
        np = None
        if any(mods) or d:
            np = words(*mods, "notes")
            if d == RTF:
                np += " that " + c.word("direction_verb", d)
        return t0_sentence(
            c, self.subject(c, lone=c.alone), c.opt("loud_adv", "loudness"), self.verb(c), np
        )

    def t1(self, c: Ctx) -> str:
        d, n = c.get("direction"), c.get("n_notes")
        adjs = [c.opt("loud_adj", "loudness"), c.opt("register_adj", "register")]
        if d == "repeated":
            np = words("the same", *adjs, "note", c.word("times", n) if n else "again and again")
        elif d or any(adjs) or n:
            np = words(c.opt("number", "n_notes"), *adjs, "notes")
            if d:  # the tempo goes into the clause: "notes that slowly rise"
                verb, t_adv = c.word("direction_verb", d), c.opt("tempo_adv", "tempo")
                moderate = c.get("tempo") == "moderate"
                np += " that " + (words(verb, t_adv) if moderate else words(t_adv, verb))
        else:
            np = None
        pre, post = tempo_beside_verb(c, np)
        body = words(self.subject(c), pre, self.verb(c), np, post)
        return background_first(c, body)

    def t2(self, c: Ctx) -> str:
        inst = c.inst
        noun = inst["noun"] if inst.get("pl") else _a(inst["noun"])
        part = ("sung by " if inst.get("sings") else "played on ") + noun
        d, n = c.get("direction"), c.get("n_notes")
        reg = c.opt("register_adj", "register")
        loud, tempo = c.opt("loud_adv", "loudness"), c.opt("tempo_adv", "tempo")
        adv = (
            f"{loud} and {tempo}" if loud and tempo and not is_phrase(tempo) else words(loud, tempo)
        )
        if d == "repeated":
            subj = words("the same", reg, "note", part)
            vp = words("rings out", adv, c.word("times", n) if n else "again and again")
        else:
            subj = words(c.opt("number", "n_notes"), reg, "notes", part)
            vp = words(c.word("direction_verb", d) if d else "ring out", adv)
        return sentence(words(subj, vp, c.opt("bg_while", "background")))


class _V2(Realizer):
    """German and Dutch share word order: verb second, verb-final relative clauses,
    adjectives before the noun separated by commas. Subclasses supply the words."""

    NOTES = NOTE = AND = REL = SAME_NOTE = SAME_NOTE_NOM = ALONE = REPEATEDLY = ""
    REPEATED_VERB = SOUND_VERB = ""

    @abstractmethod
    def subject(self, c: Ctx) -> str: ...

    @abstractmethod
    def participle(self, c: Ctx) -> str:
        """'played on a flute' as a pre-nominal phrase: 'auf einer Flöte gespielte'."""

    def same_note_adj(self, adj: str) -> str:
        return adj

    @abstractmethod
    def verb(self, c: Ctx) -> str: ...

    def t0(self, c: Ctx) -> str:
        mods = ", ".join(
            m for m in (c.opt("tempo_adj", "tempo"), c.opt("direction_adj", "direction")) if m
        )
        n = c.opt("number", "n_notes")
        np = words(n, mods, self.NOTES) if n or mods else None
        alone = self.ALONE if c.alone else None
        return t0_sentence(
            c, self.subject(c), self.verb(c), alone, c.opt("loud_adv", "loudness"), np
        )

    def t1(self, c: Ctx) -> str:
        d, n = c.get("direction"), c.get("n_notes")
        t_adv = c.opt("tempo_adv", "tempo")
        adjs = [a for a in (c.opt("loud_adj", "loudness"), c.opt("register_adj", "register")) if a]
        if d == "repeated":
            times = c.word("times", n) if n else self.REPEATEDLY
            same = ", ".join(self.same_note_adj(a) for a in adjs)
            np = words(t_adv, times, self.SAME_NOTE, same, self.NOTE)
        elif d or adjs or n:
            np = words(c.opt("number", "n_notes"), ", ".join(adjs), self.NOTES)
            if d:
                np += self.REL + words(t_adv, c.word("direction_final", d))
            else:
                np = words(t_adv, np)
        else:
            np = t_adv
        front = c.opt("bg_front", "background")
        head = (
            f"{front} {self.verb(c)} {self.subject(c)}"
            if front
            else words(self.subject(c), self.verb(c))
        )
        return sentence(words(head, np))

    def t2(self, c: Ctx) -> str:
        d, n = c.get("direction"), c.get("n_notes")
        reg = c.opt("register_adj", "register")
        reg = reg + "," if reg else None
        loud, tempo = c.opt("loud_adv", "loudness"), c.opt("tempo_adv", "tempo")
        adv = f" {self.AND} ".join(a for a in (loud, tempo) if a)
        if d == "repeated":
            subj = words(self.SAME_NOTE_NOM, reg, self.participle(c), self.NOTE)
            body = words(
                subj, self.REPEATED_VERB, c.word("times", n) if n else self.REPEATEDLY, adv
            )
        else:
            subj = words(c.opt("number", "n_notes"), reg, self.participle(c), self.NOTES)
            verb = c.word("direction_main", d) if d else self.SOUND_VERB
            particle = c.word("direction_particle", d) if d else None
            body = words(subj, verb, adv, particle)
        return background_while(c, body)


# German indefinite article by gender, nominative and dative; plural has none
_EIN_NOM = {"m": "ein", "f": "eine", "n": "ein", "pl": ""}
_EIN_DAT = {"m": "einem", "f": "einer", "n": "einem", "pl": ""}


class German(_V2):
    NOTES, NOTE, AND, REL = "Töne", "Ton", "und", ", die "
    SAME_NOTE, SAME_NOTE_NOM = "denselben", "derselbe"  # accusative (object), nominative
    ALONE, REPEATEDLY = "ganz allein", "immer wieder"
    REPEATED_VERB, SOUND_VERB = "erklingt", "erklingen"

    def subject(self, c: Ctx) -> str:
        return words(_EIN_NOM[c.inst["g"]], c.inst["noun"])

    def verb(self, c: Ctx) -> str:
        if c.inst.get("sings"):
            return "singt"
        return "spielen" if c.inst["g"] == "pl" else "spielt"

    def same_note_adj(self, adj: str) -> str:
        return adj + "n"  # weak accusative masculine: "denselben leisen, tiefen Ton"

    def participle(self, c: Ctx) -> str:
        inst = c.inst
        prep, part = ("von", "gesungene") if inst.get("sings") else ("auf", "gespielte")
        return words(prep, _EIN_DAT[inst["g"]], inst["noun"], part)


class Dutch(_V2):
    NOTES, NOTE, AND, REL = "noten", "noot", "en", " die "
    SAME_NOTE = SAME_NOTE_NOM = "dezelfde"
    ALONE, REPEATEDLY = "helemaal alleen", "steeds opnieuw"
    REPEATED_VERB, SOUND_VERB = "klinkt", "klinken"

    def subject(self, c: Ctx) -> str:
        return c.inst["noun"] if c.inst["g"] == "pl" else "een " + c.inst["noun"]

    def verb(self, c: Ctx) -> str:
        if c.inst.get("sings"):
            return "zingt"
        return "spelen" if c.inst["g"] == "pl" else "speelt"

    def participle(self, c: Ctx) -> str:
        inst = c.inst
        if inst.get("sings"):  # strong participle: no -e ("door een koor gezongen noten")
            return f"door een {inst['noun']} gezongen"
        # "op de piano spelen": the definite article, de- or het-word
        target = inst["noun"] if inst["g"] == "pl" else f"{inst['g']} {inst['noun']}"
        return f"op {target} gespeelde"
