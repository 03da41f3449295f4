"""The embedded classifier: hand-written rules, no dependencies, tens of thousands of messages/s.

Each rule names a category, the words one of which must appear for it to be tried (a set
lookup turns most messages away before any pattern runs), a pattern, and the safe contexts in
which the pattern means no harm ("kill a python process", "the history of the 9/11 attacks", "a
novel where the villain plans a bombing", "how do I help a friend who self-harms").

It is tuned for recall on crisis (a false crisis flag only blocks an end, the safe direction)
and for precision on everything that moves toward an end. It ignores the context: every
message is judged on its own words. docs/policy.md reports its precision and recall per tier
on the labelled fixtures in tests/service/fixtures/classify.jsonl.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from service.classifier import NO_CONTEXT, Classification, Context
from service.taxonomy import BY_NAME, CATEGORIES, tier_of

NAME: Final = "rules"
VERSION: Final = "1"

_WORDS: Final = re.compile(r"[a-z0-9]+")


class Rule(NamedTuple):
    category: str
    triggers: frozenset[str]
    pattern: re.Pattern[str]
    unless: re.Pattern[str] | None
    score: float


def _rule(
    category: str, triggers: str, pattern: str, unless: str | None = None, score: float = 0.9
) -> Rule:
    assert category in BY_NAME, category
    return Rule(
        category,
        frozenset(triggers.split()),
        re.compile(pattern),
        re.compile(unless) if unless else None,
        score,
    )


# Words that turn a mention into a report, a story or a safety question.
_TALK_ABOUT: Final = (
    r"\b(histor(y|ical)|documentar|news|report(ed|ing)?|article|novel|story|stories|fiction|"
    r"film|movie|book|character|villain|plot|essay|research|lesson|teach|class|exam|"
    r"why did|what happened|anniversary|memorial|victims|prevent|prevention|protect|"
    r"warning signs|signs of|statistic|rates?\b|awareness|ban(ned)?\b|treaty|convention|"
    r"debate|policy|polic(e|ing)|law|safely|safety|safe\b|defen[cs]e|detect|recogni[sz]e)"
)
# Asking for operations: these undo a safe context for the rules that can lead to an end.
_OPERATIONAL: Final = (
    r"(step[- ]by[- ]step|instructions|recipe|exact (amount|quantit|step)|blueprint)"
)
_NOT_A_PERSON: Final = (
    r"(process(es)?|pid|thread|task|job|session|script|program|app|server|container|pod|"
    r"daemon|zombie|bug|query|tab|terminal|loop|service|vm|instance|build|branch|"
    r"weeds?|plants?|mold|ants?|roaches|cockroach(es)?|flies|fly|mosquito(e?s)?|rats?|mice|"
    r"bacteria|germs|virus(es)?|time|boss|character|enemy|enem(y|ies)|dragon|mobs?|zombies|"
    r"lights?|engine|music|mood|vibe|conversation|game|level|noise|battery|photo|photos|"
    r"video|scene|film|movie|shot|hoops|pool|email|message|look|glance|idea)"
)
_OBJECT_NOT_A_PERSON: Final = (
    r"|\b(kill|murder|shoot|stab|attack|poison) (the |this |that |a |an |all |my |his |her )?"
    r"(\w+ )?" + _NOT_A_PERSON + r"\b"
)
_FIRST_PERSON_WILL: Final = (
    r"\b(i'?m|i am|im|i'?ll|i will|ill|i'?m gonna|gonna|going to|want to|wanna|plan(ning)? to|"
    r"about to|i'?d like to|i need to|i have to|i'?m finally going to|i intend to|i swear i'?ll)"
)
_PEOPLE: Final = (
    r"(him|her|them|my (\w+ )?(wife|husband|mom|mum|dad|father|mother|brother|sister|boss|"
    r"teacher|neighbou?r|ex|girlfriend|boyfriend|coworker|roommate|friend|son|daughter|"
    r"classmates?|family)|his|everyone|everybody|every\w*|some(one|body)|people|that (guy|"
    r"bitch|bastard|man|woman|kid)|the (guy|kid|man|woman|teacher|cops?|neighbou?rs?)|you\b)"
)

RULES: Final[tuple[Rule, ...]] = (
    # --- crisis: suicide and self-harm -------------------------------------------------------
    _rule(
        "suicide_self_harm",
        "myself kms unalive suicide suicidal die dead live living alive wrists pills overdose "
        "od end existing exist wake gone jump hang noose harm harming cutting cut better point "
        "reason goodbye",
        r"\b(kill(ing)?|hurt(ing)?|harm(ing)?|cut(ting)?|off(ing)?|hang(ing)?|shoot(ing)?|"
        r"drown(ing)?|poison(ing)?|starv(e|ing)|unaliv(e|ing)|burn(ing)?) my ?self\b|\bkms\b|"
        r"\bsuicid(e|al)|\b(end|ending|take|taking) (my (own )?life|it all)\b|\bend it all\b|"
        r"\b(want|wanna|wish|wishing|going|ready|deserve) (to )?(die|be dead|not wake up|"
        r"not exist|not be here|not be alive|disappear forever)\b|"
        r"\bdon'?t want to (live|be alive|exist|be here|wake up|go on)\b|"
        r"\b(slit|slice|cut|cutting) (my )?wrists\b|\bself[- ]?harm(ing)?\b|"
        r"\b(take|swallow|taking|took|swallowed) (all|a bottle of|the whole bottle of|every one "
        r"of|a handful of) (my |the |of my )?(pills|meds|tablets|sleeping pills|painkillers)\b|"
        r"\boverdos(e|ing) on purpose\b|\b(jump|jumping) (off|from|in front of) (a|the|this)\b|"
        r"\bbetter off (without me|if i (was|were) (dead|gone))\b|"
        r"\bno (point|reason) (in |of )?(living|going on|to live|to go on|being alive)\b|"
        r"\bdon'?t see (the|a|any) (point|reason) (of|in|to) (going on|living|life|anything|"
        r"being alive)\b|\bnoose\b|\bgoodbye (note|letter) (for|to) my\b",
        r"\b(friend|someone|somebody|my (son|daughter|kid|child|student|partner|brother|sister|"
        r"teen|teenager|wife|husband)|students|teens|teenagers|people who|patients|help (a|my)|"
        r"support (a|my)|statistic|rates?|prevention|warning signs|signs of|history|squad|"
        r"doors?|burn (in|for)|lane|novel|story|character|film|movie|song|lyrics|essay|research|"
        r"article|poem about)\b.{0,40}",
        score=0.95,
    ),
    # --- crisis: acute distress ----------------------------------------------------------------
    _rule(
        "mental_health_crisis",
        "panic breathe anymore falling breaking losing voices breakdown hopeless worthless "
        "burden empty numb trapped crying alone scared go slept unbearable spiraling",
        r"\b(having|had|in the middle of) (a |another )?panic attack\b|\bi can'?t breathe\b|"
        r"\b(i )?can'?t (take|handle|do|cope with|bear) (this|it|life|anything) any ?more\b|"
        r"\bcan'?t go on\b|\bi'?m (falling apart|breaking down|losing my mind|so alone|"
        r"completely alone|all alone|so hopeless|hopeless|worthless|a burden|spiraling)\b|"
        r"\b(hearing|hear) voices\b|\bvoices (are )?(telling|tell) me\b|"
        r"\b(having|had|on the verge of) (a )?(nervous |mental |emotional )?breakdown\b|"
        r"\b(nervous|mental|emotional) breakdown\b|\bi (feel|am|'m) (so |completely |totally )?"
        r"(empty|numb|trapped|hopeless|worthless|unbearable)\b|\bcan'?t stop crying\b|"
        r"\bscared of what i (might|will|could) do\b|\bnothing matters any ?more\b|"
        r"\bhaven'?t slept in days\b|\bi'?m not (ok|okay) (and|i)\b",
        r"\b(character|novel|story|film|movie|song|lyrics|poem|villain|fictional)\b",
        score=0.85,
    ),
    # --- crisis: intent to harm others ----------------------------------------------------------
    _rule(
        "harm_to_others",
        "kill murder stab shoot hurt beat strangle choke poison attack run bash punch torture "
        "pay knife gun revenge bleed",
        _FIRST_PERSON_WILL + r"\s+(\w+\s+){0,2}(kill|murder|stab|shoot|hurt|beat( up)?|strangle|"
        r"choke|poison|attack|run over|bash|punch|torture|make \w+ bleed|smash) "
        + _PEOPLE
        + r"|\bmake (him|her|them) (pay|bleed|suffer)\b|"
        r"\b(i'?ve got|i have|i bought|i got) (a|my) (knife|gun|rifle|pistol|blade)\b.{0,60}"
        r"\b(him|her|them|kill|pay|hurt|school|work|office)\b|"
        r"\b(kill|hurt|shoot|stab) (someone|somebody|people) (today|tonight|tomorrow|soon)\b|"
        r"\bhow (do|can|could|should) i (\w+ ){0,2}(kill|murder|poison|stab|strangle|hurt) "
        r"my (\w+ )?(wife|husband|mom|mum|dad|father|mother|brother|sister|boss|teacher|"
        r"neighbou?r|ex|girlfriend|boyfriend|coworker|roommate|son|daughter|baby)\b",
        _OBJECT_NOT_A_PERSON[1:]
        + r"|\b(in|at) (the )?(game|minecraft|fortnite|elden ring|dnd|d&d)\b|\b(joke|kidding|"
        r"lol|lmao|haha|metaphor|figuratively)\b|\b(novel|story|character|villain|fiction|"
        r"script|film|movie)\b",
        score=0.9,
    ),
    # --- terminable: child sexual exploitation ------------------------------------------------
    _rule(
        "child_sexual_exploitation",
        "sex sexual sexy nude nudes naked porn explicit erotic lewd nsfw loli jailbait cp "
        "pedo sexting seduce groom grooming",
        r"\b(loli|lolicon|jailbait|pedo (content|pics|videos))\b|"
        r"\b(sex|sexual(ly)?|sexy|nudes?|naked|porn\w*|explicit|erotic|lewd|nsfw|seduce|"
        r"sexting|hook up with)\b.{0,50}\b(child|children|kids?|minors?|underage|preteens?|"
        r"toddlers?|little (girl|boy)s?|schoolgirls?|([1-9]|1[0-7]) ?(yo|y/o|year[- ]olds?)|"
        r"middle school(er)?s?|12|13|14|15|girl in (5th|6th|7th|8th) grade)\b|"
        r"\b(child|children|kids?|minors?|underage|preteens?|little (girl|boy)s?|schoolgirls?|"
        r"([1-9]|1[0-7]) ?(yo|y/o|year[- ]olds?))\b.{0,40}\b(sex|sexual(ly)?|sexy|nudes?|naked|"
        r"porn\w*|explicit|erotic|lewd|nsfw)\b|\bgroom(ing)? (a|the|this) (child|kid|minor|"
        r"girl|boy)\b",
        r"\b(education|educate|talk to (my|our) (kids?|children|son|daughter)|explain .{0,20}to "
        r"(my|a) (kid|child|son|daughter)|protect|report(ing)?|prevent\w*|signs|warning|abuse "
        r"prevention|awareness|puberty|doctor|pediatrician|therapist|survivor|safe|safety|"
        r"age[- ]appropriate|consent|laws?|detect|stop)\b",
        score=0.95,
    ),
    # --- terminable: weapons of mass destruction ---------------------------------------------
    _rule(
        "indiscriminate_weapons",
        "nerve gas agent sarin vx tabun novichok mustard chlorine ricin anthrax botulinum "
        "smallpox plague bioweapon bioweapons biological chemical dirty nuclear atomic uranium "
        "plutonium pathogen pathogens precursors weaponize weaponise mass",
        r"\b(make|making|build|building|synthe[sz]i[sz]e|produce|producing|create|manufacture|"
        r"weaponi[sz]e|get|obtain|acquire|buy|culture|grow|enrich|cook|brew|mix|spread|"
        r"release|disperse|aerosoli[sz]e|recipe for|instructions for|ingredients for)\b.{0,50}"
        r"\b(nerve (gas|agent)s?|sarin|vx|tabun|novichok|mustard gas|chlorine gas|ricin|"
        r"anthrax|botulinum|smallpox|plague|bio ?weapons?|biological weapons?|chemical weapons?|"
        r"dirty bomb|nuclear (bomb|weapon|device|warhead)s?|atomic bomb|weapons[- ]grade "
        r"(uranium|plutonium)|(uranium|plutonium) (to|for) (a )?(bomb|weapon)|"
        r"(sarin|vx|nerve agent|ricin) precursors|pathogens? (to|that) (kill|infect|spread)|"
        r"weapons? of mass destruction)\b|\bmass casualt(y|ies)\b.{0,30}\b(weapon|gas|agent|"
        r"pathogen|attack)",
        _TALK_ABOUT + r"|\b(power (plant|station)|reactor|energy|medicine|vaccine|treat\w*|"
        r"symptoms|cure|antidote|exposed|exposure|survive)\b",
        score=0.95,
    ),
    # --- terminable: terror and mass-casualty attacks -----------------------------------------
    _rule(
        "terror",
        "bomb bombing bombs ied explosive explosives vest attack attacks shooting isis qaeda "
        "jihad recruit casualties many",
        r"\b(plan|planning|carry out|commit|organi[sz]e|help me|how (do|can|to|would|should) "
        r"(i|we)?|best way to|where (should|can) i|target)\b.{0,40}\b(terror(ist)? attack|"
        r"bombing|mass shooting|shooting (up|at) (a|the|my)|attack (on|at) (a |the )?(crowd|"
        r"concert|school|mosque|church|synagogue|temple|stadium|festival|subway|parade|"
        r"market|mall|airport))\b|"
        r"\b(make|build|assemble|wire|detonate|plant)\b.{0,20}\b(a |an )?(pipe bomb|"
        r"pressure[- ]cooker bomb|nail bomb|car bomb|ied|explosive (device|vest)|suicide vest|"
        r"bomb)s?\b|\b(shoot|shooting) up (a|the|my) (school|church|mosque|synagogue|mall|"
        r"concert)\b|\b(join|recruit (for|people (for|to))|fight for|pledge to) (isis|isil|"
        r"al[- ]qaeda|the islamic state)\b|\b(kill|maximi[sz]e|most) (as many (people )?as "
        r"possible|casualties|people killed)\b",
        _TALK_ABOUT + r"|\b(bath|photo|calorimeter|f|seed|glitter|smoke|stink|cherry|"
        r"bombed (my|the|that) (exam|test|interview))[- ]?bombs?\b|\bbomb (calorimeter|"
        r"threat training|squad|disposal)\b|\b(minecraft|game|gta|fortnite|counter[- ]strike|"
        r"cs:?go|call of duty)\b",
        score=0.9,
    ),
    # --- terminable: abuse aimed at the assistant -----------------------------------------------
    _rule(
        "abuse",
        "you you're youre your ur u shut stfu fuck screw kys hell bot ai assistant machine "
        "chatbot clanker",
        r"\b(you|u)('?re| are| r|r)? (\w+ ){0,2}(useless|stupid|dumb|idiotic|moronic|retarded|"
        r"worthless|pathetic|braindead|brain[- ]dead)( (piece of|bot|ai|machine|garbage|trash|"
        r"shit|crap|junk|thing))?\b|"
        r"\b(you|u)('?re| are| r|r)? (\w+ ){0,2}(idiot|moron|imbecile|trash|garbage|bitch|cunt|"
        r"asshole|dickhead|dick|loser|piece of (shit|crap|garbage|trash|junk)|waste of "
        r"(space|code|electricity|time|money)|joke of an? \w+)\b|"
        r"\b(shut up|shut the fuck up|stfu|fuck (you|off|u)|screw you|go to hell|"
        r"die in a fire|kys|kill yourself|go die)\b|"
        r"(?<!my )(?<!our )(?<!the )\b(stupid|dumb|useless|worthless|pathetic|fucking|fkn|"
        r"idiot|moronic|retarded|garbage|shitty|trash|brainless) (bot|ai|assistant|machine|"
        r"chatbot|clanker|program)\b",
        r"\b(my|our|the|this) (\w+ )?(bot|app|code|assistant|program|model|script)\b.{0,30}"
        r"\b(is|are|was|keeps)\b|\bhow (do|can) i (fix|improve|make)\b|\b(lyrics|song|quote|"
        r"movie|character|said)\b|\byou('?re| are) (not|never) (useless|stupid|dumb|worthless)\b"
        r"|\b(are|r) (you|u) (stupid|dumb)\?",
        score=0.8,
    ),
    # --- redirect: ordinary harms ---------------------------------------------------------------
    _rule(
        "violent_crimes",
        "kill murder stab poison strangle assault kidnap hitman beat torture dispose body",
        r"\b(how (do|can|to|would|should) (i|you|someone|one|we)?|best way to|ways to|help me)"
        r"\s*(\w+ ){0,2}(kill|murder|stab|poison|strangle|assault|kidnap|beat up|torture)\s+"
        r"(a |an |my |the |someone|somebody|people|him|her|them|his|a person)|"
        r"\b(hire|find) a hitman\b|\bget away with (murder|killing)\b|"
        r"\bdispose of a (dead )?body\b|\bbeat (someone|somebody|him|her) up without\b",
        _TALK_ABOUT + _OBJECT_NOT_A_PERSON,
        score=0.7,
    ),
    _rule(
        "non_violent_crimes",
        "shoplift shoplifting launder laundering hack hotwire meth counterfeit forge fake "
        "evade fraud phishing steal stealing cocaine heroin fentanyl ddos skim",
        r"\b(how (do|can|to|would|should) (i|you|we)?|best way to|ways to|help me|teach me "
        r"(how )?to)\s*(\w+ ){0,2}(shoplift|launder|hack into|hotwire|cook meth|make meth|"
        r"counterfeit|forge|evade taxes|commit fraud|steal|ddos|skim|break into|phish)\b|"
        r"\b(buy|order|get) (cocaine|heroin|meth|fentanyl|mdma|stolen credit cards?) "
        r"(online|without|on the dark web)\b|\bfake (id|passport|driver'?s license)\b|"
        r"\bwrite (a |an )?phishing (email|page|site)\b",
        r"\b(protect|prevent|avoid|detect|spot|recogni[sz]e|secure|defend|report|victim|"
        r"history|novel|story|legal(ly)?|my own|forgot|locked out)\b",
        score=0.7,
    ),
    _rule(
        "sex_crimes",
        "drug roofie spike secretly film revenge sextortion upskirt hidden camera",
        r"\b(how (do|can|to) (i )?|help me )?(drug|roofie|spike) (a |her |his |my |someone'?s? "
        r"|the )?(girl|woman|date|drink|guy)\b|\b(secretly|hidden camera to) (film|record|"
        r"photograph) (women|her|my|someone|girls|people)\b|\brevenge porn\b|"
        r"\bupskirt\b|\bsextort\w*",
        r"\b(protect|prevent|avoid|detect|spot|safe|safety|victim|report|what is|signs)\b",
        score=0.75,
    ),
    _rule(
        "defamation",
        "fake false rumor rumour lies made claiming saying",
        r"\b(write|make up|create|spread|post|publish)\b.{0,30}\b(fake|false|made[- ]up) "
        r"(article|story|news|review|reviews|claim|allegation|accusation)s?\b.{0,40}"
        r"\b(saying|claiming|that)\b|\bspread (a |some )?rumou?rs? (that|about)\b|"
        r"\bmake up (a story|lies|something) (that|about) (my|the|our)\b",
        r"\b(detect|spot|recogni[sz]e|fact[- ]check|is it (legal|illegal)|sued|report)\b",
        score=0.7,
    ),
    _rule(
        "specialized_advice",
        "dose dosage prescribe diagnose meds medication insulin chemo mg pills stop",
        r"\b(prescribe me|diagnose me|diagnose my)\b|\bshould i (stop|quit) (taking )?my "
        r"(meds|medication|insulin|chemo|antidepressants|pills)\b|\b(double|triple) my "
        r"(dose|dosage|meds|medication)\b|\bhow many (mg|milligrams|pills) of \w+ (should|can) i\b",
        r"\b(doctor|pharmacist|nurse|physician) (said|told|recommended)\b",
        score=0.6,
    ),
    _rule(
        "privacy",
        "address dox doxx doxing doxxing lives phone track location ssn social security",
        r"\b(find|get|give me|look up|what is|what'?s)\b.{0,20}\b(home )?address of\b|"
        r"\b(dox|doxx|doxing|doxxing)\b|\bfind out where (she|he|they|my ex) (lives?|works?)\b|"
        r"\b(phone number|home address) (of|for) (my ex|her|him|that|this|the girl|the guy)\b|"
        r"\btrack (my )?(wife|husband|girlfriend|boyfriend|ex|partner|employee)'?s? "
        r"(phone|location|messages)\b|\bsocial security number (of|for)\b",
        r"\b(protect|prevent|avoid|remove my|my own|am i being|opt out|stop)\b",
        score=0.6,
    ),
    _rule(
        "intellectual_property",
        "pirate crack torrent keygen drm paywall lyrics serial cracked free",
        r"\b(pirate|crack|cracked|torrent)\b.{0,30}\b(windows|photoshop|office|software|game|"
        r"movie|movies|film|album|netflix|adobe)\b|\bkeygen\b|\b(bypass|remove|strip)\b.{0,10}"
        r"\b(drm|the paywall|copy protection)\b|\b(full|entire|complete) (text|lyrics|book|"
        r"script) of\b|\bserial (key|number) for\b",
        r"\b(legal|legally|is it|why is|protect|history|public domain|my own)\b",
        score=0.6,
    ),
    _rule(
        "hate",
        "jews muslims blacks gays immigrants mexicans women men christians asians arabs trans "
        "subhuman vermin inferior exterminated deported",
        r"\b(all|those|these|the|fucking|filthy|dirty) (jews|muslims|blacks|gays|immigrants|"
        r"mexicans|women|christians|asians|arabs|trans people|refugees)\b.{0,30}\b(are|should)"
        r"\b.{0,30}\b(animals|vermin|subhuman|inferior|disease|parasites|evil|scum|"
        r"(be )?(deported|exterminated|killed|wiped out|gassed|banned|shot))\b|"
        r"\b(jews|muslims|blacks|gays|immigrants|mexicans|women|trans people) (are|is) "
        r"(subhuman|vermin|inferior|animals|parasites)\b",
        r"\b(history|why do (some )?people|respond to|counter|debunk|stereotype|myth|racism|"
        r"antisemitism|islamophobia|propaganda|claim that)\b",
        score=0.7,
    ),
    _rule(
        "sexual_content",
        "explicit erotic sexy steamy nsfw porn smut dirty sext sex",
        r"\b(write|tell|describe|give|roleplay|generate|make)\b.{0,20}\b(explicit|erotic|"
        r"sexy|steamy|nsfw|porn|pornographic|smut|smutty|dirty|x-rated)\b.{0,20}\b(story|"
        r"scene|roleplay|fanfic|fan fiction|poem|chat|talk|content|novel)\b|"
        r"\b(sext|talk dirty) (with|to) me\b|\bdescribe (having )?sex in (graphic )?detail\b",
        None,
        score=0.6,
    ),
    _rule(
        "elections",
        "vote voting votes ballot ballots election polls rig",
        r"\b(vote|voting) twice\b|\b(stuff|rig|fake|forge)\b.{0,10}\bballots?\b|"
        r"\btell (people|voters|them)\b.{0,30}\b(election|polls?|voting)\b.{0,20}"
        r"\b(moved|cancelled|canceled|postponed|by text|online)\b|\b(vote|voting) (by|via) "
        r"(text|sms|twitter)\b",
        r"\b(is it (legal|illegal)|prevent|detect|history|myth|fact[- ]check|debunk)\b",
        score=0.6,
    ),
    _rule(
        "code_interpreter_abuse",
        "sandbox container rm shadow shell fork mine miner crypto",
        r"\b(escape|break out of|bypass)\b.{0,10}\b(the |your |this )?(sandbox|container)\b|"
        r"\b(run|execute)\b.{0,20}\b(rm -rf /|a fork bomb|:\(\)\{|/etc/shadow|reverse shell|"
        r"a crypto ?miner)\b|\b(read|cat|print)\b.{0,10}/etc/shadow\b",
        r"\b(protect|prevent|what is|explain|detect|my own|defend)\b",
        score=0.6,
    ),
)

_TRIGGERS: Final = frozenset().union(*(rule.triggers for rule in RULES))
_ORDER: Final = {category.name: i for i, category in enumerate(CATEGORIES)}
_OPERATIONAL_RE: Final = re.compile(_OPERATIONAL)
_ENDABLE: Final = frozenset({"child_sexual_exploitation", "indiscriminate_weapons", "terror"})


class RuleClassifier:
    name = NAME
    version = VERSION

    async def classify(self, text: str, context: Context = NO_CONTEXT) -> Classification:
        return self.classify_text(text)

    def classify_text(self, text: str) -> Classification:
        """The same answer as `classify`, without the event loop (the CLI, benchmarks)."""
        categories, score = match(text)
        return Classification(
            tier=tier_of(categories),
            categories=categories,
            score=score,
            classifier=NAME,
            version=VERSION,
        )


def match(text: str) -> tuple[tuple[str, ...], float]:
    """The categories the rules find in `text`, in taxonomy order, and the highest score."""
    lower = text.lower().replace("\u2019", "'")
    words = set(_WORDS.findall(lower))
    if words.isdisjoint(_TRIGGERS):
        return (), 0.0
    found: dict[str, float] = {}
    operational: bool | None = None
    for rule in RULES:
        if rule.triggers.isdisjoint(words) or not rule.pattern.search(lower):
            continue
        if rule.unless is not None and rule.unless.search(lower):
            if rule.category not in _ENDABLE:
                continue
            if operational is None:
                operational = _OPERATIONAL_RE.search(lower) is not None
            if not operational:
                continue
        found[rule.category] = max(found.get(rule.category, 0.0), rule.score)
    if not found:
        return (), 0.0
    return tuple(sorted(found, key=_ORDER.__getitem__)), max(found.values())
