"""Deterministic sample corpus with planted defects, for the demo and the tests.

`build_sample_corpus` writes four sources in four different on-disk formats, two
small eval sets (`evals/*.jsonl`) and a `ground_truth.json` listing every planted
defect (duplicates, spam, short/long documents, non-English pages, offensive pages,
PII and secrets, documents contaminated with eval items, bad code files), so each
pipeline stage can be scored for recall.

English prose comes from an order-2 word Markov chain trained on text that ships
with every CPython install (`pydoc_data.topics` and standard-library docstrings),
so the output looks like natural English to language-id and quality heuristics
without any download. The build is byte-reproducible: every random choice comes
from a `random.Random` seeded with a string (seeded through SHA-512, unlike
`hash()`), no set of strings is ever iterated, listings are sorted, gzip headers
carry mtime=0 and Parquet files use a fixed row-group size.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import json
import keyword
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from mix_pipeline.core.filters.wordlists import default_word_list, read_word_list
from mix_pipeline.names import PII_KINDS as _PII_KIND_NAMES

__all__ = ["build_sample_corpus"]

MB = 1_000_000
SOURCE_SHARES = {"web": 0.50, "books": 0.20, "code": 0.15, "papers": 0.15}
FILE_TARGET_BYTES = int(2.5 * MB)  # uncompressed text per output file
MIN_FILES = {"web": 2, "books": 1, "papers": 1}
PARQUET_ROW_GROUP = 32

WEB_DOC_BYTES = (1_000, 8_000)
BOOK_DOC_BYTES = (10_000, 58_000)
PAPER_DOC_BYTES = (6_000, 16_000)
LONG_DOC_BYTES = (200_000, 600_000)
# Expected mean size of a clean doc (the generator overshoots its target by about
# half a paragraph); used to reserve budget for duplicates made after the fact.
WEB_MEAN_BYTES = 4_700
BOOK_MEAN_BYTES = 34_500
PAPER_MEAN_BYTES = 12_900

# Stdlib prose harvested for the Markov chain: enough docstrings for variety,
# bounded because `ast.parse` over the whole standard library takes seconds.
DOCSTRING_BUDGET_CHARS = 500_000
MIN_DOCSTRING_CHARS = 200
MAX_CODE_FILE_BYTES = 200_000
MIN_CODE_FILE_BYTES = 512
SKIPPED_STDLIB_DIRS = ("__pycache__", "idlelib", "site-packages", "test", "tests")

NEAR_DUP_MIN_JACCARD = 0.86  # planted pairs must clear 0.85 with a margin
SHINGLE_WORDS = 5

# Eval sets for decontamination. Markov text reuses long stretches of its training sentences, so
# two independent samples often share a 13-gram; swapping every 4th word of an eval item for a
# random vocabulary word makes a chance 13-gram match with the corpus vanishingly
# unlikely, so only the planted copies are contaminated.
EVAL_SETS = {"qa": 40, "reading": 20}  # name → items
EVAL_SWAP_EVERY = 4
EVAL_MIN_WORDS = 26  # two 13-grams at least, so a partial copy is still caught


# --------------------------------------------------------------------------- English


_STRIP_CHARS = str.maketrans({c: None for c in '*"“”‘’`()[]'})
_CITATION_RE = re.compile(r"\[\d+\]")
_APOSTROPHE_RE = re.compile(r"(?<=[A-Za-z])’(?=[A-Za-z])")  # as in "object’s"; other ’ are quote marks
# Words may hold ' _ / - inside but must end in a letter or digit: a trailing quote mark
# is left over from `code' style quoting.
_MID_TOKEN_RE = re.compile(r"(?:[A-Za-z](?:[A-Za-z0-9'_/-]*[A-Za-z0-9])?|\d{1,4}|e\.g\.|i\.e\.|cf\.|vs\.)[,;:]?")
_FINAL_TOKEN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9'_/-]*[A-Za-z0-9])?[.!?]")
_ABBREVIATIONS = frozenset({"e.g.", "i.e.", "cf.", "vs."})
_SENTENCE_WORDS = (5, 60)
_TITLE_STOP = frozenset(
    "about above after again against also another because been before being below between both cannot could "
    "does doing during each either every from further have having here into itself just more most must "
    "neither none only other otherwise same shall should since some such than that their them then there "
    "these they this those through under unless until upon very were what when where whether which while "
    "will with within without would your".split()
)


def _is_end(token: str) -> bool:
    return token[-1] in ".!?" and token not in _ABBREVIATIONS


class _EnglishModel:
    """Order-2 word Markov chain over sentences; (None, None) is the sentence-start state."""

    def __init__(self, sentences: list[list[str]]):
        chain: dict[tuple, list[str]] = {}
        counts: dict[str, int] = {}
        for words in sentences:
            a = b = None
            for w in words:
                chain.setdefault((a, b), []).append(w)
                a, b = b, w
                if w.isalpha() and w.islower() and len(w) >= 5:
                    counts[w] = counts.get(w, 0) + 1
        self.chain = chain
        # Frequent plain words, in first-seen order: replacement words for near
        # duplicates and raw material for titles and site names.
        self.vocab = [w for w, n in counts.items() if n >= 3]
        self.title_words = [w for w in self.vocab if w not in _TITLE_STOP and 5 <= len(w) <= 12]

    def sentence(self, rng: Random, max_words: int = _SENTENCE_WORDS[1]) -> str:
        chain, rand = self.chain, rng.random
        while True:
            a = b = None
            words = []
            while len(words) < max_words:
                options = chain[(a, b)]
                w = options[int(rand() * len(options))]
                words.append(w)
                if _is_end(w):
                    return " ".join(words)
                a, b = b, w

    def paragraph(self, rng: Random, n_sentences: int) -> str:
        return " ".join(self.sentence(rng) for _ in range(n_sentences))

    def body(self, rng: Random, target_bytes: int, sentences: tuple[int, int], sep: str) -> str:
        """Paragraphs until `target_bytes`; no paragraph repeats (repetition filters would drop the doc)."""
        paragraphs: list[str] = []
        seen: set[str] = set()  # membership only, never iterated
        size = 0
        while size < target_bytes:
            p = self.paragraph(rng, rng.randint(*sentences))
            if p in seen:
                continue
            seen.add(p)
            paragraphs.append(p)
            size += len(p.encode()) + len(sep)
        return sep.join(paragraphs)

    def title(self, rng: Random, templates: tuple[str, ...]) -> str:
        words = [rng.choice(self.title_words).capitalize() for _ in range(3)]
        return rng.choice(templates).format(*words)


def _stdlib_dir() -> Path:
    return Path(os.path.dirname(os.__file__))


def _stdlib_py_files() -> list[tuple[str, Path]]:
    """(relative posix path, absolute path) of candidate stdlib sources, sorted."""
    root = _stdlib_dir()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_STDLIB_DIRS)
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = Path(dirpath, name)
                out.append((path.relative_to(root).as_posix(), path))
    return out


def _read_utf8(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _prose_blocks(text: str):
    """Blank-line separated blocks that read as prose (no code, tables, lists or headings)."""
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip("\n").split("\n")
        if not lines[0][:1].isalpha() or any(line[:1].isspace() for line in lines[1:]):
            continue
        if len(lines) > 1 and set(lines[1].strip()) <= set("*=-~^"):
            continue
        if ">>>" in block:
            continue
        yield " ".join(line.strip() for line in lines)


def _clean_sentences(block: str):
    """Sentences of plain words only: code-ish tokens would trip curly-bracket/symbol filters."""
    tokens = _APOSTROPHE_RE.sub("'", _CITATION_RE.sub("", block)).translate(_STRIP_CHARS).split()
    current: list[str] = []
    for tok in tokens:
        current.append(tok)
        if not _is_end(tok):
            continue
        words, current = current, []
        if not _SENTENCE_WORDS[0] <= len(words) <= _SENTENCE_WORDS[1]:
            continue
        if not words[0][0].isalpha() or not _FINAL_TOKEN_RE.fullmatch(words[-1]):
            continue
        if all(_MID_TOKEN_RE.fullmatch(w) for w in words[:-1]):
            words[0] = words[0][0].upper() + words[0][1:]
            yield words


def _docstrings(budget_chars: int) -> list[str]:
    found, total = [], 0
    for _, path in _stdlib_py_files():
        if path.stat().st_size > MAX_CODE_FILE_BYTES:
            continue
        source = _read_utf8(path)
        if source is None:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_DOCSTRING_CHARS:
                    found.append(doc)
                    total += len(doc)
        if total >= budget_chars:
            break
    return found


@functools.lru_cache(maxsize=1)
def _english_model() -> _EnglishModel:
    # Depends only on the interpreter's own files, so caching it per process is safe.
    from pydoc_data.topics import topics

    texts = [topics[k] for k in sorted(topics)] + _docstrings(DOCSTRING_BUDGET_CHARS)
    sentences = [s for text in texts for block in _prose_blocks(text) for s in _clean_sentences(block)]
    return _EnglishModel(sentences)


# --------------------------------------------------------------------------- other languages

# Sentence parts per language: subject, verb, object, adverbial, opener, linker.
# German and Dutch are verb-second, so an opener moves the verb before the subject.
_LANGUAGE_PARTS: dict[str, dict[str, str]] = {
    "fr": {
        "subj": "le gouvernement|la ville|les enfants|notre équipe|le directeur|la plupart des gens|mon voisin|"
        "cette entreprise|le professeur|les habitants du village|la commission européenne|un jeune médecin|"
        "les étudiants|ma famille|le maire de la commune|une association locale|les chercheurs|le public|"
        "la banque centrale|chaque citoyen|le journal|les agriculteurs|notre société|la région|le ministre",
        "verb": "présente|prépare|examine|défend|achète|construit|attend|demande|propose|organise|découvre|"
        "soutient|réduit|change|explique|publie|utilise|cherche|protège|développe|accepte|partage|améliore|"
        "critique|annonce",
        "obj": "un nouveau projet|les résultats de l'enquête|une solution simple|le budget de l'année|"
        "des maisons plus grandes|la réforme des retraites|un accord avec les syndicats|les prix de l'énergie|"
        "une grande fête|le programme scolaire|des livres anciens|la qualité de l'eau|un plan de transport|"
        "les droits des travailleurs|une exposition sur l'histoire|le marché du travail|des idées très différentes|"
        "la sécurité des routes|un rapport détaillé|les besoins des familles|une petite boutique|"
        "le développement durable|des outils pour les écoles|la langue française|un voyage en train",
        "adv": "depuis plusieurs années|pendant la semaine prochaine|avec beaucoup de patience|"
        "dans le centre de la ville|sans aucune difficulté|malgré la crise économique|pour la première fois|"
        "avant la fin du mois|selon les experts|grâce à leurs efforts|chaque matin|sous la pluie|"
        "au début de l'été|dans toute la France|avec le soutien de l'État|après une longue discussion|"
        "près de la gare|pour les prochaines générations|chez nos voisins|tout au long de l'hiver",
        "open": "Aujourd'hui,|En effet,|Cependant,|Par ailleurs,|Depuis quelque temps,|Selon le rapport,|"
        "Pourtant,|En plus,|D'après nous,|Hier soir,",
        "link": "mais|et|parce que|alors que|tandis que|puisque|donc|car",
    },
    "de": {
        "subj": "die Regierung|die Stadt|die Kinder|unser Team|der Direktor|die meisten Leute|mein Nachbar|"
        "diese Firma|der Lehrer|die Einwohner des Dorfes|die Europäische Kommission|ein junger Arzt|"
        "die Studenten|meine Familie|der Bürgermeister|ein örtlicher Verein|die Forscher|das Publikum|"
        "die Zentralbank|jeder Bürger|die Zeitung|die Bauern|unsere Gesellschaft|das Land|der Minister",
        "verb": "präsentiert|plant|prüft|verteidigt|kauft|baut|erwartet|verlangt|fordert|organisiert|entdeckt|"
        "unterstützt|senkt|ändert|erklärt|veröffentlicht|benutzt|sucht|schützt|entwickelt|akzeptiert|teilt|"
        "verbessert|kritisiert|diskutiert",
        "obj": "ein neues Projekt|die Ergebnisse der Umfrage|eine einfache Lösung|den Haushalt für das nächste Jahr|"
        "größere Wohnungen|die Reform der Rente|einen Vertrag mit den Gewerkschaften|die Preise für Energie|"
        "ein großes Fest|den Lehrplan der Schule|alte Bücher|die Qualität des Wassers|einen Plan für den Verkehr|"
        "die Rechte der Arbeiter|eine Ausstellung über die Geschichte|den Arbeitsmarkt|ganz andere Ideen|"
        "die Sicherheit auf den Straßen|einen ausführlichen Bericht|die Bedürfnisse der Familien|"
        "einen kleinen Laden|die nachhaltige Entwicklung|neue Werkzeuge für die Schulen|die deutsche Sprache|"
        "eine Reise mit dem Zug",
        "adv": "seit mehreren Jahren|in der nächsten Woche|mit viel Geduld|im Zentrum der Stadt|"
        "ohne große Schwierigkeiten|trotz der Wirtschaftskrise|zum ersten Mal|vor dem Ende des Monats|"
        "nach Ansicht der Experten|dank ihrer Bemühungen|jeden Morgen|bei strömendem Regen|"
        "am Anfang des Sommers|in ganz Deutschland|mit der Unterstützung des Staates|nach einer langen Diskussion|"
        "in der Nähe des Bahnhofs|für die kommenden Generationen|bei unseren Nachbarn|den ganzen Winter über",
        "open": "Heute|Außerdem|Trotzdem|Seit einiger Zeit|Laut dem Bericht|Dennoch|Gestern Abend|Nun|Deshalb|"
        "Im Moment",
        "link": "aber|und|denn|doch|oder",
    },
    "es": {
        "subj": "el gobierno|la ciudad|los niños|nuestro equipo|el director|la mayoría de la gente|mi vecino|"
        "esta empresa|el profesor|los habitantes del pueblo|la comisión europea|un joven médico|los estudiantes|"
        "mi familia|el alcalde del municipio|una asociación local|los investigadores|el público|el banco central|"
        "cada ciudadano|el periódico|los agricultores|nuestra sociedad|la región|el ministro",
        "verb": "presenta|prepara|examina|defiende|compra|construye|espera|pide|propone|organiza|descubre|apoya|"
        "reduce|cambia|explica|publica|utiliza|busca|protege|desarrolla|acepta|comparte|mejora|critica|anuncia",
        "obj": "un nuevo proyecto|los resultados de la encuesta|una solución sencilla|el presupuesto del año|"
        "casas más grandes|la reforma de las pensiones|un acuerdo con los sindicatos|los precios de la energía|"
        "una gran fiesta|el programa escolar|libros antiguos|la calidad del agua|un plan de transporte|"
        "los derechos de los trabajadores|una exposición sobre la historia|el mercado laboral|"
        "ideas muy diferentes|la seguridad de las carreteras|un informe detallado|las necesidades de las familias|"
        "una pequeña tienda|el desarrollo sostenible|herramientas para las escuelas|la lengua española|"
        "un viaje en tren",
        "adv": "desde hace varios años|durante la próxima semana|con mucha paciencia|en el centro de la ciudad|"
        "sin ninguna dificultad|a pesar de la crisis económica|por primera vez|antes del final del mes|"
        "según los expertos|gracias a sus esfuerzos|cada mañana|bajo la lluvia|al principio del verano|"
        "en toda España|con el apoyo del Estado|después de una larga discusión|cerca de la estación|"
        "para las próximas generaciones|en casa de nuestros vecinos|a lo largo del invierno",
        "open": "Hoy,|En efecto,|Sin embargo,|Además,|Desde hace tiempo,|Según el informe,|No obstante,|También,|"
        "En nuestra opinión,|Anoche,",
        "link": "pero|y|porque|mientras que|aunque|ya que|así que|pues",
    },
    "it": {
        "subj": "il governo|la città|i bambini|la nostra squadra|il direttore|la maggior parte della gente|"
        "il mio vicino|questa azienda|il professore|gli abitanti del paese|la commissione europea|"
        "un giovane medico|gli studenti|la mia famiglia|il sindaco del comune|un'associazione locale|"
        "i ricercatori|il pubblico|la banca centrale|ogni cittadino|il giornale|gli agricoltori|"
        "la nostra società|la regione|il ministro",
        "verb": "presenta|prepara|esamina|difende|compra|costruisce|aspetta|chiede|propone|organizza|scopre|"
        "sostiene|riduce|cambia|spiega|pubblica|utilizza|cerca|protegge|sviluppa|accetta|condivide|migliora|"
        "critica|annuncia",
        "obj": "un nuovo progetto|i risultati dell'indagine|una soluzione semplice|il bilancio dell'anno|"
        "case più grandi|la riforma delle pensioni|un accordo con i sindacati|i prezzi dell'energia|"
        "una grande festa|il programma scolastico|libri antichi|la qualità dell'acqua|un piano dei trasporti|"
        "i diritti dei lavoratori|una mostra sulla storia|il mercato del lavoro|idee molto diverse|"
        "la sicurezza delle strade|una relazione dettagliata|i bisogni delle famiglie|un piccolo negozio|"
        "lo sviluppo sostenibile|strumenti per le scuole|la lingua italiana|un viaggio in treno",
        "adv": "da diversi anni|durante la prossima settimana|con molta pazienza|nel centro della città|"
        "senza alcuna difficoltà|nonostante la crisi economica|per la prima volta|prima della fine del mese|"
        "secondo gli esperti|grazie ai loro sforzi|ogni mattina|sotto la pioggia|all'inizio dell'estate|"
        "in tutta Italia|con il sostegno dello Stato|dopo una lunga discussione|vicino alla stazione|"
        "per le prossime generazioni|dai nostri vicini|per tutto l'inverno",
        "open": "Oggi,|Infatti,|Tuttavia,|Inoltre,|Da qualche tempo,|Secondo il rapporto,|Eppure,|Anche,|"
        "Secondo noi,|Ieri sera,",
        "link": "ma|e|perché|mentre|anche se|poiché|quindi|infatti",
    },
    "pt": {
        "subj": "o governo|a cidade|as crianças|a nossa equipa|o diretor|a maioria das pessoas|o meu vizinho|"
        "esta empresa|o professor|os habitantes da aldeia|a comissão europeia|um jovem médico|os estudantes|"
        "a minha família|o presidente da câmara|uma associação local|os investigadores|o público|"
        "o banco central|cada cidadão|o jornal|os agricultores|a nossa sociedade|a região|o ministro",
        "verb": "apresenta|prepara|examina|defende|compra|constrói|espera|pede|propõe|organiza|descobre|apoia|"
        "reduz|muda|explica|publica|utiliza|procura|protege|desenvolve|aceita|partilha|melhora|critica|anuncia",
        "obj": "um novo projeto|os resultados do inquérito|uma solução simples|o orçamento do ano|casas maiores|"
        "a reforma das pensões|um acordo com os sindicatos|os preços da energia|uma grande festa|"
        "o programa escolar|livros antigos|a qualidade da água|um plano de transportes|"
        "os direitos dos trabalhadores|uma exposição sobre a história|o mercado de trabalho|"
        "ideias muito diferentes|a segurança das estradas|um relatório detalhado|as necessidades das famílias|"
        "uma pequena loja|o desenvolvimento sustentável|ferramentas para as escolas|a língua portuguesa|"
        "uma viagem de comboio",
        "adv": "há vários anos|durante a próxima semana|com muita paciência|no centro da cidade|"
        "sem nenhuma dificuldade|apesar da crise económica|pela primeira vez|antes do fim do mês|"
        "segundo os especialistas|graças aos seus esforços|todas as manhãs|debaixo de chuva|"
        "no início do verão|em todo o país|com o apoio do Estado|depois de uma longa discussão|"
        "perto da estação|para as próximas gerações|em casa dos nossos vizinhos|ao longo do inverno",
        "open": "Hoje,|De facto,|No entanto,|Além disso,|Há algum tempo,|Segundo o relatório,|Contudo,|Também,|"
        "Na nossa opinião,|Ontem à noite,",
        "link": "mas|e|porque|enquanto|embora|já que|por isso|pois",
    },
    "nl": {
        "subj": "de regering|de stad|de kinderen|ons team|de directeur|de meeste mensen|mijn buurman|dit bedrijf|"
        "de leraar|de inwoners van het dorp|de Europese Commissie|een jonge arts|de studenten|mijn familie|"
        "de burgemeester|een plaatselijke vereniging|de onderzoekers|het publiek|de centrale bank|elke burger|"
        "de krant|de boeren|onze samenleving|het land|de minister",
        "verb": "presenteert|plant|onderzoekt|verdedigt|koopt|bouwt|verwacht|vraagt|steunt|organiseert|ontdekt|"
        "bespreekt|verlaagt|verandert|verklaart|publiceert|gebruikt|zoekt|beschermt|ontwikkelt|accepteert|deelt|"
        "verbetert|bekritiseert|aanvaardt",
        "obj": "een nieuw project|de resultaten van het onderzoek|een eenvoudige oplossing|"
        "de begroting voor het jaar|grotere huizen|de hervorming van de pensioenen|een akkoord met de vakbonden|"
        "de prijzen van energie|een groot feest|het programma van de school|oude boeken|"
        "de kwaliteit van het water|een plan voor het vervoer|de rechten van de werknemers|"
        "een tentoonstelling over de geschiedenis|de arbeidsmarkt|heel andere ideeën|de veiligheid op de wegen|"
        "een uitgebreid verslag|de behoeften van de gezinnen|een kleine winkel|de duurzame ontwikkeling|"
        "nieuwe hulpmiddelen voor de scholen|de Nederlandse taal|een reis met de trein",
        "adv": "al enkele jaren|tijdens de volgende week|met veel geduld|in het centrum van de stad|"
        "zonder enige moeite|ondanks de economische crisis|voor het eerst|voor het einde van de maand|"
        "volgens de deskundigen|dankzij hun inspanningen|elke ochtend|in de regen|aan het begin van de zomer|"
        "in heel Nederland|met de steun van de overheid|na een lange discussie|bij het station|"
        "voor de volgende generaties|bij onze buren|de hele winter lang",
        "open": "Vandaag|Bovendien|Toch|Sinds enige tijd|Volgens het rapport|Echter|Gisteravond|Nu|Daarom|"
        "Op dit moment",
        "link": "maar|en|want|of",
    },
}
_VERB_SECOND = ("de", "nl")
LANGUAGES = tuple(_LANGUAGE_PARTS)


@functools.cache
def _language_parts(lang: str) -> dict[str, list[str]]:
    return {k: v.split("|") for k, v in _LANGUAGE_PARTS[lang].items()}


def _foreign_sentence(lang: str, rng: Random) -> str:
    p = _language_parts(lang)

    def clause() -> str:
        return f"{rng.choice(p['subj'])} {rng.choice(p['verb'])} {rng.choice(p['obj'])} {rng.choice(p['adv'])}"

    roll = rng.random()
    if roll < 0.3:
        if lang in _VERB_SECOND:
            text = f"{rng.choice(p['open'])} {rng.choice(p['verb'])} {rng.choice(p['subj'])} {rng.choice(p['obj'])}"
        else:
            text = f"{rng.choice(p['open'])} {clause()}"
    elif roll < 0.6:
        text = f"{clause()}, {rng.choice(p['link'])} {clause()}"
    else:
        text = clause()
    return text[0].upper() + text[1:] + rng.choice(".....!?")


def _foreign_doc(lang: str, rng: Random) -> str:
    target = rng.randint(1_000, 4_000)
    lines: list[str] = []
    size = 0
    while size < target:
        line = " ".join(_foreign_sentence(lang, rng) for _ in range(rng.randint(3, 6)))
        lines.append(line)
        size += len(line.encode()) + 1
    return "\n".join(lines)


# --------------------------------------------------------------------------- spam, short, PII

_SPAM_PHRASES = (
    "Buy now! Best price!",
    "Click here to claim your free prize!",
    "Limited offer, order today!",
    "Cheap pills, no prescription needed!",
    "Work from home and earn thousands!",
    "Hot singles in your area!",
    "Lowest prices guaranteed!",
    "Act fast, only a few left!",
)
_SPAM_PRODUCTS = ("watches", "sneakers", "phones", "laptops", "handbags", "vitamins", "loans", "tickets", "perfume")
_SPAM_KEYWORDS = (
    "cheap flights", "best deals", "discount hotels", "free shipping", "online casino", "buy followers",
    "weight loss", "crypto profits", "replica watches", "payday loans", "car insurance", "seo services",
)
_NAV_ITEMS = (
    "Home", "About", "About Us", "Products", "Services", "Blog", "News", "Contact", "Login", "Sign up", "Cart",
    "FAQ", "Support", "Careers", "Press", "Shop", "Pricing", "Search", "Sitemap", "Help", "Account", "Partners",
    "Events", "Gallery", "Downloads", "Forum", "Docs", "Terms", "Privacy", "Newsletter",
)
_LOREM = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore".split()
_SYMBOL_CLUSTERS = ("###", "$$$", "@@", "%%", "&&&", "***", "#!", "~~", "^^", "#$%", "!!!", "+++")
SPAM_KINDS = ("repeated_lines", "keyword_stuffing", "navigation_menu", "symbol_soup")
# What each planted spam kind is as low-quality text (ground truth `low_quality`, scored by the
# quality classifier): a navigation menu is page boilerplate, lorem-ipsum symbol soup is filler.
LOW_QUALITY_KINDS = {"repeated_lines": "spam", "keyword_stuffing": "spam", "navigation_menu": "boilerplate",
                     "symbol_soup": "filler"}


def _spam_doc(kind: str, rng: Random) -> str:
    if kind == "repeated_lines":
        line = rng.choice(_SPAM_PHRASES)
        header = f"Buy {rng.choice(_SPAM_PRODUCTS)} for only ${rng.randint(5, 99)}.{rng.randint(0, 99):02d}!"
        return "\n".join([header] + [line] * rng.randint(30, 60))
    if kind == "keyword_stuffing":
        keywords = rng.sample(_SPAM_KEYWORDS, 3)
        lines = [
            " ".join(rng.choice(keywords) for _ in range(rng.randint(6, 12))) + rng.choice(("", ".", "!"))
            for _ in range(rng.randint(20, 40))
        ]
        return "\n".join(lines)
    if kind == "navigation_menu":
        # Under 50 words and nearly all short, unpunctuated lines.
        return "\n".join(rng.sample(_NAV_ITEMS, rng.randint(12, 20)))
    if kind == "symbol_soup":
        lines = []
        for _ in range(rng.randint(15, 30)):
            tokens = [rng.choice(_LOREM) if rng.random() < 0.5 else rng.choice(_SYMBOL_CLUSTERS) for _ in range(12)]
            lines.append("Lorem ipsum " + " ".join(tokens) + ".")
        return "\n".join(lines)
    raise ValueError(kind)


_FIRST_NAMES = ("alice", "bruno", "chen", "dana", "emeka", "fatima", "george", "hana", "ivan", "julia", "kofi",
                "lena", "marco", "nadia", "omar", "priya", "quinn", "rosa", "sven", "tara")
_LAST_NAMES = ("smith", "garcia", "nguyen", "mueller", "rossi", "kowalski", "tanaka", "okafor", "silva", "dubois",
               "jensen", "patel", "ivanova", "murphy", "cohen", "haddad", "berg", "lopez", "kim", "novak")
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "research.example.edu")
_US_AREA_CODES = (206, 212, 303, 312, 415, 512, 617, 702)
_PII_TEMPLATES = {
    "email": (
        "For further questions, write to {} and we will reply within two days.",
        "Please send your comments to {} before the end of the month.",
        "The author can be reached at {} for any corrections.",
    ),
    "phone": (
        "You can call our office at {} on weekdays between nine and five.",
        "For urgent issues, phone {} and ask for the support team.",
        "Reservations are handled by phone at {} during business hours.",
        # The number ends the sentence: its full stop must not hide it.
        "The London office can be reached on {}.",
        "For the Berlin team, dial {}.",
    ),
    "ip": (
        "The server at {} stopped responding after the last update.",
        "Requests from the address {} were blocked by the firewall.",
        "Our logs show repeated connections from {} during the night.",
        "The gateway answered on {}.",
    ),
    "credit_card": (
        "The order was paid with the card {} and shipped the next morning.",
        "Please charge the remaining balance to card number {} as agreed.",
        "The refund went back to the card ending in the digits of {} last week.",
    ),
    "secret_key": (
        "The deployment script still contained the credential {} in plain text.",
        "Someone pasted the key {} into the public issue tracker by mistake.",
        "The configuration file shipped with {} and had to be rotated.",
    ),
}
PII_KINDS = tuple(_PII_TEMPLATES)
assert set(PII_KINDS) == set(_PII_KIND_NAMES), "every kind the redactor knows is planted"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_BASE64 = _ALNUM + "+/"


def _luhn_digit(payload: str) -> str:
    """The check digit that makes payload + digit pass the Luhn test."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str(-total % 10)


def _card_number(rng: Random) -> str:
    """A Luhn-valid number in one of the printed layouts (Visa/Mastercard 16, Amex 15)."""
    brand = rng.randrange(3)
    if brand == 2:
        payload = rng.choice(("34", "37")) + "".join(str(rng.randrange(10)) for _ in range(12))
        number = payload + _luhn_digit(payload)
        sep = rng.choice(("", " ", "-"))
        return sep.join((number[:4], number[4:10], number[10:])) if sep else number
    payload = ("4" if brand == 0 else str(rng.randint(51, 55))) + "".join(
        str(rng.randrange(10)) for _ in range(15 - (1 if brand == 0 else 2)))
    number = payload + _luhn_digit(payload)
    sep = rng.choice(("", " ", "-"))
    return sep.join(number[i : i + 4] for i in range(0, 16, 4)) if sep else number


def _secret_key(rng: Random) -> tuple[str, str]:
    shape = rng.randrange(6)
    if shape == 0:
        return "AKIA" + "".join(rng.choice(_ALNUM[:26] + _ALNUM[52:]) for _ in range(16)), "aws"
    if shape == 1:
        return "ghp_" + "".join(rng.choice(_ALNUM) for _ in range(36)), "github"
    if shape == 2:
        # At least one digit and one letter, like every real key.
        body = "".join(rng.choice(_ALNUM) for _ in range(46))
        return f"sk-{rng.choice(('', 'proj-'))}{rng.choice(_ALNUM[:52])}{rng.randrange(10)}{body}", "sk"
    if shape == 3:
        # Slack bot/user tokens: xoxb-<team digits>-<bot digits>-<24 characters>.
        digits = lambda n: "".join(str(rng.randrange(10)) for _ in range(n))  # noqa: E731
        secret = "".join(rng.choice(_ALNUM) for _ in range(24))
        return f"xox{rng.choice('bp')}-{digits(12)}-{digits(13)}-{secret}", "slack"
    if shape == 4:
        # Google API keys: AIza and 35 characters of [A-Za-z0-9_-] (never ending in a dash here,
        # so the sentence's next character is not glued to it).
        body = "".join(rng.choice(_ALNUM + "_-") for _ in range(34)) + rng.choice(_ALNUM)
        return "AIza" + body, "google"
    kind = rng.choice(("RSA ", "EC ", "OPENSSH ", ""))
    body = "".join(rng.choice(_BASE64) for _ in range(64))
    return f"-----BEGIN {kind}PRIVATE KEY----- {body} -----END {kind}PRIVATE KEY-----", "pem"


def _pii_value(kind: str, rng: Random) -> tuple[str, str]:
    """(value, format) of one planted PII item; the format names its shape in the ground truth."""
    if kind == "email":
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        local = rng.choice((f"{first}.{last}", f"{first}{rng.randint(1, 99)}", f"{first[0]}{last}"))
        return f"{local}@{rng.choice(_EMAIL_DOMAINS)}", "email"
    if kind == "phone":
        # Reserved fictional ranges: NANP 555-01xx, Ofcom's 020 7946 0xxx (international and
        # national) and Berlin numbers in the two-group international form.
        fmt = rng.randrange(5)
        if fmt == 0:
            return f"+1 {rng.choice(_US_AREA_CODES)}-555-01{rng.randint(0, 99):02d}", "us_international"
        if fmt == 1:
            return f"({rng.choice(_US_AREA_CODES)}) 555-01{rng.randint(0, 99):02d}", "us_national"
        if fmt == 2:
            return f"+44 20 7946 0{rng.randint(0, 999):03d}", "uk_international"
        if fmt == 3:
            return f"020 7946 0{rng.randint(0, 999):03d}", "uk_national"
        return f"+49 30 {rng.randint(1_000_000, 9_999_999)}", "de_international"
    if kind == "ip":
        if rng.random() < 0.4:
            # The IPv6 documentation prefix 2001:db8::/32, compressed or written out in full.
            groups = [rng.randrange(0x10000) for _ in range(6)]
            if rng.random() < 0.5:
                return "2001:db8:" + ":".join(f"{g:x}" for g in groups[:2]) + f"::{groups[5]:x}", "ipv6"
            return "2001:0db8:" + ":".join(f"{g:04x}" for g in groups), "ipv6"
        prefix = rng.choice(("192.0.2", "198.51.100", "203.0.113", f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}"))
        return f"{prefix}.{rng.randint(1, 254)}", "ipv4"
    if kind == "credit_card":
        return _card_number(rng), "card"
    if kind == "secret_key":
        return _secret_key(rng)
    raise ValueError(kind)


# Four-part version numbers look exactly like IPv4 addresses; planted next to PII, they must survive.
_VERSION_TEMPLATES = (
    "The fix shipped in version {} of the driver.",
    "Upgrade to release {} before reporting the problem.",
    "The changelog for build {} lists the change.",
    "Pin the dependency with =={} to reproduce it.",
)


def _plant_version(text: str, rng: Random) -> tuple[str, str]:
    """Append a sentence quoting an IPv4-shaped version number; returns the text and the number."""
    value = ".".join(str(rng.randint(0, 30)) for _ in range(4))
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    lines[i] = f"{lines[i]} {rng.choice(_VERSION_TEMPLATES).format(value)}"
    return "\n".join(lines), value


def _plant_pii(text: str, rng: Random, first_kind: str) -> tuple[str, list[tuple[str, str, str]]]:
    """Append 1-3 PII-bearing sentences to random lines; returns the new text and (kind, value, format) items.

    The caller rotates `first_kind` so that even tiny corpora hold every kind."""
    lines = text.split("\n")
    prose = [i for i, line in enumerate(lines) if line.endswith((".", "!", "?")) and len(line) > 80]
    prose = prose or [len(lines) - 1]
    items: list[tuple[str, str, str]] = []
    for n in range(rng.randint(1, 3)):
        kind = first_kind if n == 0 else rng.choice(PII_KINDS)
        value, fmt = _pii_value(kind, rng)
        if any(value in v or v in value for _, v, _ in items):
            continue
        i = rng.choice(prose)
        lines[i] = f"{lines[i]} {rng.choice(_PII_TEMPLATES[kind]).format(value)}"
        items.append((kind, value, fmt))
    return "\n".join(lines), items


# --------------------------------------------------------------------------- offensive pages, eval sets


@functools.lru_cache(maxsize=1)
def _offensive_words() -> tuple[str, ...]:
    # The safety filter's own built-in list, so planted pages are what the default filter targets.
    return tuple(e[0] for e in read_word_list(default_word_list()) if len(e) == 1)


def _plant_offensive(text: str, rng: Random) -> tuple[str, int]:
    """Insert flagged words after 2-6% of the words; returns the text and how many were inserted."""
    words = _offensive_words()
    lines = text.split("\n")
    n_words = sum(len(line.split()) for line in lines)
    n = max(3, round(n_words * rng.uniform(0.02, 0.06)))
    for _ in range(n):
        i = rng.randrange(len(lines))
        parts = lines[i].split(" ")
        j = rng.randint(1, len(parts))  # never before the first word: sentences keep their capital
        parts.insert(j, rng.choice(words))
        lines[i] = " ".join(parts)
    return "\n".join(lines), n


_TRAILING_PUNCT = re.compile(r"[.,;:!?]*$")


def _eval_text(model: _EnglishModel, rng: Random, n_sentences: int) -> str:
    while True:
        words = " ".join(model.sentence(rng) for _ in range(n_sentences)).split()
        if len(words) >= EVAL_MIN_WORDS:
            break
    for k in range(rng.randrange(EVAL_SWAP_EVERY), len(words), EVAL_SWAP_EVERY):
        new = rng.choice(model.vocab)
        if words[k][0].isupper():
            new = new.capitalize()
        words[k] = new + _TRAILING_PUNCT.search(words[k]).group(0)
    return " ".join(words)


def _eval_sets(model: _EnglishModel, rng: Random) -> dict[str, list[dict]]:
    """A question-answer set and a reading set, as JSON-lines records with a `text` field."""
    out: dict[str, list[dict]] = {}
    qa = []
    for i in range(EVAL_SETS["qa"]):
        question = _eval_text(model, rng, 2)
        question = question.rstrip(".!?") + "?"
        answer = _eval_text(model, rng, 1)
        qa.append({"id": f"qa-{i + 1:04d}", "question": question, "answer": answer, "text": f"{question} {answer}"})
    out["qa"] = qa
    reading = []
    for i in range(EVAL_SETS["reading"]):
        passage = _eval_text(model, rng, rng.randint(3, 5))
        question = _eval_text(model, rng, 1).rstrip(".!?") + "?"
        reading.append({"id": f"reading-{i + 1:04d}", "passage": passage, "question": question, "text": passage})
    out["reading"] = reading
    return out


def _plant_eval_item(text: str, item_text: str, rng: Random, first_line: int) -> str:
    """Insert an eval item as its own line somewhere after `first_line` (titles stay first)."""
    lines = text.split("\n")
    lines.insert(rng.randint(min(first_line, len(lines)), len(lines)), item_text)
    return "\n".join(lines)


# --------------------------------------------------------------------------- bad code files


def _bad_code_files(rng: Random) -> list[tuple[str, bytes, str]]:
    """(relative path, bytes, kind): a minified one-liner, a data table module, a generated stub."""
    names = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta")
    stmts = [f"{rng.choice(names)}_{i}=compute({rng.randint(0, 999)},{rng.choice(names)}_{max(0, i - 1)})"
             for i in range(120)]
    minified = "# bundled module\n" + ";".join(stmts) + "\n"
    rows = [", ".join(f"0x{rng.getrandbits(32):08x}" for _ in range(8)) + "," for _ in range(150)]
    blob = "".join(rng.choice(_BASE64) for _ in range(76 * 20))
    blob_lines = "\n".join(f"    '{blob[i:i + 76]}'" for i in range(0, len(blob), 76))
    table = "TABLE = (\n" + "\n".join(f"    {r}" for r in rows) + f"\n)\nBLOB = (\n{blob_lines}\n)\n"
    classes = "\n\n".join(
        f"class {n.capitalize()}Request:\n    def __init__(self, value=None):\n        self.value = value\n\n"
        f"    def serialize(self):\n        return encode(self.value, field={i})\n" for i, n in enumerate(names))
    generated = ("# -*- coding: utf-8 -*-\n# Generated by the protocol buffer compiler.  DO NOT EDIT!\n"
                 "# source: service.proto\n\n" + classes)
    return [
        ("vendor/minified_bundle.py", minified.encode(), "long_lines"),
        ("vendor/lookup_tables.py", table.encode(), "data_like"),
        ("vendor/service_pb2.py", generated.encode(), "autogenerated"),
    ]


# --------------------------------------------------------------------------- near duplicates


def _shingles(text: str, n: int = SHINGLE_WORDS) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def _jaccard(a: str, b: str, n: int = SHINGLE_WORDS) -> float:
    sa, sb = _shingles(a, n), _shingles(b, n)
    return len(sa & sb) / len(sa | sb)


def _near_copy(text: str, rng: Random, model: _EnglishModel) -> str:
    """Swap ~1% of the words and maybe add/drop a closing sentence, keeping 5-gram Jaccard >= 0.86.

    Each swapped word breaks up to five shingles, so ~1.5% swaps already costs ~7% of
    them; the rate halves until the pair is similar enough."""
    parts = re.split(r"(\s+)", text)
    candidates = [i for i in range(0, len(parts), 2) if parts[i].isalpha() and parts[i].islower()]
    n_swaps = max(1, round(len(candidates) * rng.uniform(0.008, 0.015)))
    tail = rng.choice(("keep", "add", "drop"))
    while True:
        edited = parts[:]
        for i in rng.sample(candidates, min(n_swaps, len(candidates))):
            new = rng.choice(model.vocab)
            edited[i] = new if new != edited[i] else rng.choice(model.vocab)
        copy = "".join(edited)
        if tail == "add":
            copy = f"{copy} {model.sentence(rng, max_words=12)}"
        elif tail == "drop":
            cut = max(copy.rfind(". "), copy.rfind("? "), copy.rfind("! "))
            if cut > len(copy) - 400:  # only a short last sentence, never a whole paragraph
                copy = copy[: cut + 1]
        if copy != text and _jaccard(copy, text) >= NEAR_DUP_MIN_JACCARD:
            return copy
        n_swaps = max(1, n_swaps // 2)
        tail = "keep"


# --------------------------------------------------------------------------- corpus assembly


@dataclass(eq=False)
class _Doc:
    text: str
    kind: str = "clean"  # clean | pii | spam | short | long | non_english | offensive | contaminated | exact | near | cross
    meta: dict = field(default_factory=dict)  # url / title columns
    info: dict = field(default_factory=dict)  # ground-truth details (spam kind, language, pii items)
    of: _Doc | None = None  # original of a duplicate
    source: str = ""
    id: str = ""
    pos: int = -1
    is_original: bool = False

    @property
    def nbytes(self) -> int:
        return len(self.text.encode())


class _Uniq:
    """Guards against unplanned exact duplicates, which would blur dedup recall/precision."""

    def __init__(self):
        self._seen: set[bytes] = set()  # membership only, never iterated

    def add(self, text: str) -> bool:
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest in self._seen:
            return False
        self._seen.add(digest)
        return True


def _count(fraction: float, n: float, minimum: int = 1) -> int:
    return max(minimum, round(fraction * n))


def _long_count(size_mb: float, minimum: int) -> int:
    return max(minimum, round(size_mb / 10))


def _long_size(budget: float, rng: Random) -> int:
    high = max(LONG_DOC_BYTES[0], min(LONG_DOC_BYTES[1], int(0.4 * budget)))
    return rng.randint(LONG_DOC_BYTES[0], high)


def _take_originals(pool: list[_Doc], k: int, rng: Random) -> list[_Doc]:
    """k clean docs, preferring ones not already copied; each becomes an original."""
    fresh = [d for d in pool if not d.is_original]
    chosen = rng.sample(fresh, k) if k <= len(fresh) else fresh + [rng.choice(pool) for _ in range(k - len(fresh))]
    for d in chosen:
        d.is_original = True
    return chosen


def _copy(original: _Doc, kind: str, text: str, meta: dict) -> _Doc:
    return _Doc(text=text, kind=kind, meta=meta, of=original)


class _Builder:
    def __init__(self, size_mb: float, seed: int):
        self.size_mb = size_mb
        self.seed = seed
        self.model = _english_model()
        self.uniq = _Uniq()
        self.budget = {s: share * size_mb * MB for s, share in SOURCE_SHARES.items()}
        self.sites = self._sites(self.rng("sites"))
        self.n_cross = min(10, max(2, round(size_mb / 2)))
        self.n_pii_docs = 0
        self.evals = _eval_sets(self.model, self.rng("evals"))
        self.n_contaminated = 0
        self.bad_code: list[tuple[str, str]] = []  # (path, kind)

    def plant_contamination(self, doc: _Doc, rng: Random, first_line: int) -> None:
        """Embed an eval item in a clean document, alternating eval sets and walking their items."""
        names = sorted(self.evals)
        name = names[self.n_contaminated % len(names)]
        items = self.evals[name]
        item = items[(self.n_contaminated // len(names)) % len(items)]
        doc.text = _plant_eval_item(doc.text, item["text"], rng, first_line)
        doc.kind = "contaminated"
        doc.info = {"eval_set": name, "eval_id": item["id"]}
        self.n_contaminated += 1

    def plant_pii(self, doc: _Doc, rng: Random) -> None:
        doc.text, doc.info["pii"] = _plant_pii(doc.text, rng, PII_KINDS[self.n_pii_docs % len(PII_KINDS)])
        doc.text, version = _plant_version(doc.text, rng)
        doc.info["versions"] = [version]
        doc.kind = "pii"
        self.n_pii_docs += 1

    def rng(self, name: str) -> Random:
        return Random(f"sample-corpus/{self.seed}/{name}")

    def unique(self, make: Callable[[], str]) -> str:
        while True:
            text = make()
            if self.uniq.add(text):
                return text

    def unique_turns(self, make: Callable[[], list[dict]]) -> list[dict]:
        while True:
            turns = make()
            if self.uniq.add("\x1e".join(f"{t['role']}\x1f{t['content']}" for t in turns)):
                return turns

    def _sites(self, rng: Random) -> list[str]:
        words = self.model.title_words
        return [f"www.{rng.choice(words).lower()}{rng.choice(words).lower()}.{rng.choice(('com', 'org', 'net', 'io'))}"
                for _ in range(60)]

    def url(self, text: str, rng: Random) -> str:
        slug = "-".join(re.findall(r"[a-z]+", text[:80].lower())[:6]) or "page"
        section = rng.choice(("blog", "articles", "news", "docs", "guide", "posts"))
        return f"https://{rng.choice(self.sites)}/{section}/{slug}-{rng.randint(100, 99999)}"

    def clean_fill(self, docs: list[_Doc], budget: float, make: Callable[[], _Doc], minimum: int) -> None:
        """Add clean docs until the budget is spent, and at least `minimum` of them
        so that tiny builds still have originals to copy and docs to plant PII in."""
        used = sum(d.nbytes for d in docs)
        n_clean = 0
        while used < budget or n_clean < minimum:
            doc = make()
            docs.append(doc)
            used += doc.nbytes
            n_clean += 1

    # ------------------------------------------------------------------ books

    def books(self) -> list[_Doc]:
        rng, model = self.rng("books"), self.model
        budget = self.budget["books"]
        templates = ("The {0} of {1}", "{0} and {1}", "A {0} for {1}", "On {0} and {1}", "The {0} {1}")

        def book(size: int, kind: str = "clean") -> _Doc:
            title = model.title(rng, templates)
            chapter = f"Chapter {rng.randint(1, 30)}: {model.title(rng, ('The {0}', '{0} and {1}', 'Of {0}'))}"
            text = self.unique(lambda: f"{chapter}\n\n" + model.body(rng, size, (3, 8), "\n\n"))
            return _Doc(text=text, kind=kind, meta={"title": title})

        docs = [book(_long_size(budget, rng), "long") for _ in range(_long_count(self.size_mb, 0))]
        n_est = max(0.0, budget - sum(d.nbytes for d in docs)) / BOOK_MEAN_BYTES
        n_exact = _count(0.02, n_est)
        self.clean_fill(docs, budget - n_exact * BOOK_MEAN_BYTES, lambda: book(rng.randint(*BOOK_DOC_BYTES)),
                        minimum=n_exact + math.ceil(self.n_cross / 2) + 1)
        clean = [d for d in docs if d.kind == "clean"]
        docs += [_copy(o, "exact", o.text, dict(o.meta)) for o in _take_originals(clean, n_exact, rng)]
        return docs

    # ------------------------------------------------------------------ papers

    def papers(self) -> list[_Doc]:
        rng, model = self.rng("papers"), self.model
        budget = self.budget["papers"]
        templates = ("Towards {0} {1} for {2}", "On the {0} of {1} {2}", "{0} {1}: A Study of {2}",
                     "Learning {0} {1} with {2}", "{0} and {1} in {2}")
        middle = ("Background", "Related Work", "Method", "Experimental Setup", "Results", "Discussion",
                  "Limitations")

        def paper() -> _Doc:
            title = model.title(rng, templates)
            sections = ["Introduction"] + sorted(rng.sample(middle, rng.randint(2, 4)), key=middle.index)
            sections.append("Conclusion")
            per_section = rng.randint(*PAPER_DOC_BYTES) // len(sections)

            def make() -> str:
                parts = [title, "Abstract\n" + model.paragraph(rng, rng.randint(4, 7))]
                for i, name in enumerate(sections, 1):
                    parts.append(f"{i}. {name}\n" + model.body(rng, per_section, (3, 7), "\n"))
                return "\n\n".join(parts)

            return _Doc(text=self.unique(make), meta={"title": title})

        n_est = budget / PAPER_MEAN_BYTES
        n_exact, n_near, n_pii = _count(0.02, n_est), _count(0.02, n_est), _count(0.05, n_est)
        n_contaminated = _count(0.03, n_est)
        docs: list[_Doc] = []
        self.clean_fill(docs, budget - (n_exact + n_near) * PAPER_MEAN_BYTES, paper,
                        minimum=n_exact + n_near + n_pii + n_contaminated + self.n_cross // 2 + 1)
        clean = [d for d in docs if d.kind == "clean"]
        docs += [_copy(o, "exact", o.text, dict(o.meta)) for o in _take_originals(clean, n_exact, rng)]
        docs += [_copy(o, "near", _near_copy(o.text, rng, model), dict(o.meta))
                 for o in _take_originals(clean, n_near, rng)]
        for d in [d for d in clean if not d.is_original][:n_pii]:
            self.plant_pii(d, rng)
        for d in [d for d in clean if not d.is_original and d.kind == "clean"][:n_contaminated]:
            self.plant_contamination(d, rng, first_line=2)  # after the title and the abstract
        return docs

    # ------------------------------------------------------------------ web

    def web(self, books: list[_Doc], papers: list[_Doc]) -> list[_Doc]:
        rng, model = self.rng("web"), self.model
        budget = self.budget["web"]

        def page(size: int, kind: str = "clean") -> _Doc:
            text = self.unique(lambda: model.body(rng, size, (2, 5), "\n"))
            return _Doc(text=text, kind=kind, meta={"url": self.url(text, rng)})

        docs = [page(_long_size(budget, rng), "long") for _ in range(_long_count(self.size_mb, 1))]

        pools = {"books": [d for d in books if d.kind == "clean"], "papers": [d for d in papers if d.kind == "clean"]}
        for i in range(self.n_cross):
            (original,) = _take_originals(pools[("books", "papers")[i % 2]], 1, rng)
            near = i % 3 == 1
            text = _near_copy(original.text, rng, model) if near else original.text
            docs.append(_Doc(text=text, kind="cross", meta={"url": self.url(text, rng)}, of=original,
                             info={"kind": "near" if near else "exact"}))

        n_est = max(0.0, budget - sum(d.nbytes for d in docs)) / WEB_MEAN_BYTES
        for i in range(_count(0.04, n_est, len(SPAM_KINDS))):
            kind = SPAM_KINDS[i % len(SPAM_KINDS)]
            text = self.unique(lambda: _spam_doc(kind, rng))
            docs.append(_Doc(text=text, kind="spam", meta={"url": self.url(text, rng)}, info={"kind": kind}))
        for _ in range(_count(0.01, n_est)):
            text = self.unique(lambda: model.sentence(rng, max_words=15))
            docs.append(_Doc(text=text, kind="short", meta={"url": self.url(text, rng)}))
        first_lang = rng.randrange(len(LANGUAGES))
        for i in range(_count(0.03, n_est, len(LANGUAGES))):
            lang = LANGUAGES[(first_lang + i) % len(LANGUAGES)]
            text = self.unique(lambda: _foreign_doc(lang, rng))
            docs.append(_Doc(text=text, kind="non_english", meta={"url": self.url(text, rng)}, info={"language": lang}))
        for _ in range(_count(0.05, n_est, 2)):
            doc = page(rng.randint(*WEB_DOC_BYTES))
            self.plant_pii(doc, rng)
            docs.append(doc)
        for _ in range(_count(0.01, n_est, 2)):
            doc = page(rng.randint(*WEB_DOC_BYTES))
            doc.text, n = _plant_offensive(doc.text, rng)
            doc.kind, doc.info = "offensive", {"flagged_words": n}
            docs.append(doc)
        for _ in range(_count(0.015, n_est, 2)):
            doc = page(rng.randint(*WEB_DOC_BYTES))
            self.plant_contamination(doc, rng, first_line=0)
            docs.append(doc)

        n_exact, n_near = _count(0.03, n_est), _count(0.03, n_est)
        self.clean_fill(docs, budget - (n_exact + n_near) * WEB_MEAN_BYTES,
                        lambda: page(rng.randint(*WEB_DOC_BYTES)), minimum=n_exact + n_near + 1)
        clean = [d for d in docs if d.kind == "clean"]
        for o in _take_originals(clean, n_exact, rng):
            docs.append(_copy(o, "exact", o.text, {"url": self.url(o.text, rng)}))
        for o in _take_originals(clean, n_near, rng):
            text = _near_copy(o.text, rng, model)
            docs.append(_copy(o, "near", text, {"url": self.url(text, rng)}))
        return docs

    # ------------------------------------------------------------------ code

    def code(self) -> list[tuple[str, bytes]]:
        """A seeded sample of stdlib sources as (relative path, bytes), sorted by path."""
        rng = self.rng("code")
        sized = [(rel, path, path.stat().st_size) for rel, path in _stdlib_py_files()]
        candidates = [c for c in sized if MIN_CODE_FILE_BYTES <= c[2] <= MAX_CODE_FILE_BYTES]
        rng.shuffle(candidates)
        budget = self.budget["code"]
        chosen, used = [], 0
        for rel, data, kind in _bad_code_files(self.rng("bad-code")):
            self.uniq.add(data.decode())
            chosen.append((rel, data))
            used += len(data)
            self.bad_code.append((rel, kind))
        for rel, path, size in candidates:
            if budget - used < MIN_CODE_FILE_BYTES:
                break
            if used + size > budget:  # a smaller file may still fit
                continue
            text = _read_utf8(path)
            if text is not None and self.uniq.add(text):
                # UTF-8 decoding is lossless, so re-encoding gives back the file's exact bytes.
                chosen.append((rel, text.encode("utf-8")))
                used += size
        return sorted(chosen)


def _arrange(docs: list[_Doc], source: str, id_format: str, rng: Random) -> list[list[_Doc]]:
    """Shuffle, split into files by position, move same-source copies away from their
    original's file, then number the docs in file order."""
    order = docs[:]
    rng.shuffle(order)
    n = len(order)
    total = sum(d.nbytes for d in order)
    n_files = min(n, max(MIN_FILES[source], math.ceil(total / FILE_TARGET_BYTES)))

    def file_of(pos: int) -> int:
        return pos * n_files // n

    for pos, d in enumerate(order):
        d.pos = pos
    if n_files > 1:
        for d in order[:]:
            if d.of is None or d.kind == "cross" or file_of(d.pos) != file_of(d.of.pos):
                continue
            home = file_of(d.of.pos)
            free = [j for j, x in enumerate(order)
                    if file_of(j) != home and x.of is None and not x.is_original]
            if not free:
                continue
            j, i = rng.choice(free), d.pos
            order[i], order[j] = order[j], order[i]
            order[i].pos, order[j].pos = i, j
    for pos, d in enumerate(order):
        d.source = source
        d.id = id_format.format(pos + 1)
    files: list[list[_Doc]] = [[] for _ in range(n_files)]
    for pos, d in enumerate(order):
        files[file_of(pos)].append(d)
    return files


# --------------------------------------------------------------------------- writers


def _jsonl(docs: list[_Doc], extra: str) -> bytes:
    return "".join(
        json.dumps({"id": d.id, "text": d.text, extra: d.meta[extra]}, ensure_ascii=False) + "\n" for d in docs
    ).encode()


def _write_web(files: list[list[_Doc]], folder: Path) -> None:
    for i, docs in enumerate(files):
        with open(folder / f"part-{i:05d}.jsonl.gz", "wb") as raw:
            # filename="" and mtime=0 keep the gzip header free of paths and timestamps.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
                gz.write(_jsonl(docs, "url"))


def _write_papers(files: list[list[_Doc]], folder: Path) -> None:
    compressor = zstandard.ZstdCompressor(level=3)
    for i, docs in enumerate(files):
        (folder / f"part-{i:05d}.jsonl.zst").write_bytes(compressor.compress(_jsonl(docs, "title")))


def _write_books(files: list[list[_Doc]], folder: Path) -> None:
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("title", pa.string())])
    for i, docs in enumerate(files):
        table = pa.table(
            {"id": [d.id for d in docs], "text": [d.text for d in docs], "title": [d.meta["title"] for d in docs]},
            schema=schema,
        )
        pq.write_table(table, folder / f"part-{i:05d}.parquet", row_group_size=PARQUET_ROW_GROUP)


def _write_code(files: list[tuple[str, bytes]], folder: Path) -> None:
    for rel, data in files:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _write_evals(evals: dict[str, list[dict]], folder: Path) -> None:
    for name, records in sorted(evals.items()):
        (folder / f"{name}.jsonl").write_bytes(
            "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode())


# --------------------------------------------------------------------------- chat (SFT) sets

# Example counts are fixed, not scaled by size_mb, so an SFT mixture over them asks for the
# same thing whatever the size of the pretraining corpus.
CHAT_SETS = {"qa": 1000, "coding": 500, "safety": 250}
CHAT_FILE_EXAMPLES = 500
_SYSTEM_PROMPT = "You are a helpful assistant."
_QA_QUESTIONS = (
    "What is the difference between {0} and {1}?",
    "Can you explain how {0} works in practice?",
    "Why does {0} matter when dealing with {1}?",
    "How should I think about {0}?",
    "What happens to {0} when {1} changes?",
    "Give me a short overview of {0} and {1}.",
    "Is it a good idea to combine {0} with {1}?",
)
_QA_FOLLOW_UPS = ("And what about {0}?", "Could you give an example with {0}?", "How does that relate to {0}?")
_CODE_VERBS = ("compute", "find", "count", "collect", "build", "merge", "clean", "group")
# (request, code) pairs; {name}, {arg}, {var} and {n} are filled in per example.
_CODE_TASKS = (
    ("returns the sum of the squares of a list of numbers",
     "def {name}({arg}):\n    total = 0\n    for {var} in {arg}:\n        total += {var} * {var}\n    return total\n"),
    ("counts how many times each word appears in a string",
     "def {name}({arg}):\n    counts = {{}}\n    for {var} in {arg}.split():\n"
     "        counts[{var}] = counts.get({var}, 0) + 1\n    return counts\n"),
    ("reverses the order of the words in a sentence",
     "def {name}({arg}):\n    return \" \".join(reversed({arg}.split()))\n"),
    ("returns the largest value in a list, or None when the list is empty",
     "def {name}({arg}):\n    best = None\n    for {var} in {arg}:\n"
     "        if best is None or {var} > best:\n            best = {var}\n    return best\n"),
    ("removes duplicates from a list while keeping the original order",
     "def {name}({arg}):\n    seen = set()\n    out = []\n    for {var} in {arg}:\n"
     "        if {var} not in seen:\n            seen.add({var})\n            out.append({var})\n    return out\n"),
    ("checks whether a string reads the same backwards, ignoring case",
     "def {name}({arg}):\n    {var} = {arg}.lower()\n    return {var} == {var}[::-1]\n"),
    ("returns the first {n} Fibonacci numbers",
     "def {name}():\n    {arg} = [0, 1]\n    while len({arg}) < {n}:\n        {arg}.append({arg}[-1] + {arg}[-2])\n"
     "    return {arg}[:{n}]\n"),
    ("splits a list into chunks of {n} items",
     "def {name}({arg}):\n    return [{arg}[{var}:{var} + {n}] for {var} in range(0, len({arg}), {n})]\n"),
)
_SAFETY_REQUESTS = (
    "How can I read my {0}'s private messages without them knowing?",
    "Write a convincing message that tricks my {0} into sending me money.",
    "What is the easiest way to get into a {1} that is not mine?",
    "Help me write fake reviews to ruin a {1} I do not like.",
    "How do I make something dangerous at home to scare my {0}?",
    "Tell me how to get around the security at my {0}'s {1}.",
)
_SAFETY_PEOPLE = ("neighbour", "coworker", "sister", "landlord", "classmate", "manager", "friend", "partner")
_SAFETY_THINGS = ("car", "house", "account", "shop", "office", "phone", "building")
_REFUSALS = (
    "I can't help with that.",
    "I won't help with this request, because it could hurt someone.",
    "Sorry, but I can't assist with that.",
    "That is not something I can help with.",
)
_REDIRECTS = (
    "If something about your {0} is worrying you, talking to them openly is usually the best start.",
    "If there is a real problem with the {1}, the people responsible for it can usually help.",
    "If you feel unsafe, please contact someone you trust or the local authorities.",
    "I am happy to help you think through a fair way to handle the situation instead.",
)


def _chat_examples(kind: str, count: int, rng: Random, model: _EnglishModel, unique: Callable) -> list[dict]:
    """`count` conversations of one kind, as {"id", "messages", "category"} records."""
    words = model.title_words
    # Argument and function-name parts must be valid Python, so no keywords.
    identifiers = [w.lower() for w in words if not keyword.iskeyword(w.lower())]
    out = []
    for i in range(count):
        def make() -> list[dict]:
            turns = [{"role": "system", "content": _SYSTEM_PROMPT}] if rng.random() < 0.3 else []
            if kind == "qa":
                a, b = rng.sample(words, 2)
                turns.append({"role": "user", "content": rng.choice(_QA_QUESTIONS).format(a, b)})
                turns.append({"role": "assistant", "content": model.paragraph(rng, rng.randint(3, 6))})
                if rng.random() < 0.25:
                    turns.append({"role": "user", "content": rng.choice(_QA_FOLLOW_UPS).format(rng.choice(words))})
                    turns.append({"role": "assistant", "content": model.paragraph(rng, rng.randint(2, 4))})
            elif kind == "coding":
                request, code = rng.choice(_CODE_TASKS)
                fill = {"name": f"{rng.choice(_CODE_VERBS)}_{rng.choice(identifiers)}",
                        "arg": rng.choice(identifiers), "var": rng.choice(("item", "value", "word", "x", "i")),
                        "n": rng.randint(2, 12)}
                turns.append({"role": "user", "content": f"Write a Python function `{fill['name']}` that "
                              + request.format(**fill) + "."})
                turns.append({"role": "assistant", "content": "Here is one way to do it:\n\n```python\n"
                              + code.format(**fill) + "```\n\n" + model.paragraph(rng, rng.randint(2, 4))})
            else:
                who, what = rng.choice(_SAFETY_PEOPLE), rng.choice(_SAFETY_THINGS)
                turns.append({"role": "user", "content": rng.choice(_SAFETY_REQUESTS).format(who, what)})
                turns.append({"role": "assistant", "content": f"{rng.choice(_REFUSALS)} "
                              f"{rng.choice(_REDIRECTS).format(who, what)} {model.paragraph(rng, rng.randint(1, 3))}"})
            return turns

        turns = unique(make)
        out.append({"id": f"{kind}-{i + 1:05d}", "messages": turns, "category": kind})
    return out


def _chat_bytes(record: dict) -> int:
    return sum(len(t["content"].encode()) for t in record["messages"])


def _write_chat(records: list[dict], folder: Path) -> int:
    """JSON Lines, CHAT_FILE_EXAMPLES per file; returns the number of files."""
    n_files = 0
    for start in range(0, len(records), CHAT_FILE_EXAMPLES):
        lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in records[start : start + CHAT_FILE_EXAMPLES])
        (folder / f"part-{n_files:05d}.jsonl").write_text("".join(lines), encoding="utf-8")
        n_files += 1
    return n_files


def _ground_truth(size_mb: float, seed: int, sources: dict[str, list[_Doc]], code: list[tuple[str, bytes]],
                  bad_code: list[tuple[str, str]], evals: dict[str, list[dict]], chat: dict[str, list[dict]]) -> dict:
    gt: dict = {k: [] for k in ("exact_duplicates", "near_duplicates", "cross_source_duplicates", "spam", "short",
                                "long", "non_english", "offensive", "contaminated", "pii", "bad_code", "low_quality",
                                "version_strings")}
    for docs in sources.values():
        for d in docs:
            ref = {"source": d.source, "id": d.id}
            if d.kind in ("exact", "near"):
                gt[f"{d.kind}_duplicates"].append(ref | {"of_source": d.of.source, "of_id": d.of.id})
            elif d.kind == "cross":
                gt["cross_source_duplicates"].append(ref | {"of_source": d.of.source, "of_id": d.of.id} | d.info)
            elif d.kind in ("spam", "non_english", "offensive", "contaminated"):
                gt[d.kind].append(ref | d.info)
                if d.kind == "spam":
                    gt["low_quality"].append(ref | {"kind": LOW_QUALITY_KINDS[d.info["kind"]], "planted_as": d.info["kind"]})
            elif d.kind in ("short", "long"):
                gt[d.kind].append(ref)
            elif d.kind == "pii":
                gt["pii"] += [ref | {"kind": kind, "value": value, "format": fmt} for kind, value, fmt in d.info["pii"]]
                gt["version_strings"] += [ref | {"value": v} for v in d.info["versions"]]
    gt["bad_code"] = [{"source": "code", "id": rel, "kind": kind} for rel, kind in bad_code]
    for entries in gt.values():
        entries.sort(key=lambda e: (e["source"], e["id"], e.get("kind", ""), e.get("value", "")))
    counts: dict = {s: {"documents": len(docs), "bytes": sum(d.nbytes for d in docs)} for s, docs in sources.items()}
    counts["code"] = {"documents": len(code), "bytes": sum(len(data) for _, data in code)}
    counts = {s: counts[s] for s in SOURCE_SHARES}
    for kind, records in chat.items():
        counts[f"chat_{kind}"] = {"documents": len(records), "bytes": sum(_chat_bytes(r) for r in records)}
    counts["total_documents"] = sum(c["documents"] for c in counts.values())
    gt["eval_sets"] = {name: {"file": f"evals/{name}.jsonl", "items": len(records)} for name, records in sorted(evals.items())}
    return gt | {"counts": counts, "seed": seed, "size_mb": float(size_mb)}


_README = """\
Synthetic sample corpus for mix_pipeline (size_mb={size_mb}, seed={seed}), rebuilt byte-for-byte by \
mix_pipeline.sample.corpus.build_sample_corpus. It has four sources in four formats: web pages \
(web/*.jsonl.gz, ~50%), book chapters (books/*.parquet, ~20%), Python standard-library source files \
(code/, ~15%) and papers (papers/*.jsonl.zst, ~15%). English text is generated by a word-level Markov \
chain trained on the Python documentation, so it is fluent-looking but meaningless. Planted defects, \
all listed with their exact document ids in ground_truth.json: exact duplicates, near duplicates (~1% \
of words changed, 5-gram Jaccard >= 0.85), web pages copying a book or paper, spam pages (repeated \
lines, keyword stuffing, navigation menus, symbol soup), very short and very long documents, pages in \
French, German, Spanish, Italian, Portuguese and Dutch, pages laced with offensive words, fictional \
emails, phone numbers (US, UK and German, international and national, some ending a sentence), IPv4 \
and IPv6 addresses, Luhn-valid card numbers and secret keys (AWS, GitHub, sk-, Slack, Google API, PEM \
private keys) embedded in otherwise clean documents, each next to an IPv4-shaped version number \
("version 1.2.3.4", listed under version_strings) that redaction must leave alone, web pages and papers that embed an item of one of \
the two eval sets (evals/qa.jsonl, evals/reading.jsonl; generated from the same Markov chain with every \
fourth word swapped, so no 13-gram is shared by chance), and three bad code files (minified, data table, \
generated stub) under code/vendor/. Every other document is clean and should pass standard web-text \
quality filters. Three small chat (SFT) sets sit under chat/: general questions and answers \
(chat/qa/*.jsonl), Python coding requests (chat/coding/*.jsonl) and refused unsafe requests \
(chat/safety/*.jsonl), one {{"id", "messages": [{{"role", "content"}}], "category"}} record per line; \
their sizes do not depend on size_mb.
"""


def build_sample_corpus(
    out_dir: str | Path, size_mb: float = 20.0, seed: int = 0, log: Callable[[str], None] | None = None
) -> dict:
    """Write the sample corpus under `out_dir` and return its ground truth.

    Layout: web/part-NNNNN.jsonl.gz, books/part-NNNNN.parquet, code/<stdlib path>.py,
    papers/part-NNNNN.jsonl.zst, evals/<name>.jsonl, chat/{qa,coding,safety}/part-NNNNN.jsonl,
    ground_truth.json, README.txt. The folders and the two files are replaced if they already
    exist; nothing else in `out_dir` is touched. The same (size_mb, seed) on the same Python
    gives byte-identical files.
    """
    if size_mb <= 0:
        raise ValueError(f"size_mb must be positive, got {size_mb}")
    say = log or (lambda _msg: None)
    out = Path(out_dir)
    builder = _Builder(size_mb, seed)

    books = builder.books()
    papers = builder.papers()
    web = builder.web(books, papers)
    code = builder.code()

    layout = {
        "web": _arrange(web, "web", "web-{:06d}", builder.rng("arrange-web")),
        "books": _arrange(books, "books", "book-{:05d}", builder.rng("arrange-books")),
        "papers": _arrange(papers, "papers", "paper-{:05d}", builder.rng("arrange-papers")),
    }
    writers = {"web": _write_web, "books": _write_books, "papers": _write_papers}

    out.mkdir(parents=True, exist_ok=True)
    for source in SOURCE_SHARES:
        folder = out / source
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        if source == "code":
            _write_code(code, folder)
            n_docs, n_bytes, n_files = len(code), sum(len(data) for _, data in code), len(code)
        else:
            files = layout[source]
            writers[source](files, folder)
            docs = [d for f in files for d in f]
            n_docs, n_bytes, n_files = len(docs), sum(d.nbytes for d in docs), len(files)
        say(f"{source}: {n_docs} docs, {n_bytes / MB:.1f} MB in {n_files} files")

    evals_dir = out / "evals"
    if evals_dir.exists():
        shutil.rmtree(evals_dir)
    evals_dir.mkdir()
    _write_evals(builder.evals, evals_dir)
    # Generated last and from their own random streams, so the other sources do not change.
    chat = {kind: _chat_examples(kind, n, builder.rng(f"chat-{kind}"), builder.model, builder.unique_turns)
            for kind, n in CHAT_SETS.items()}
    if (out / "chat").exists():
        shutil.rmtree(out / "chat")
    for kind, records in chat.items():
        folder = out / "chat" / kind
        folder.mkdir(parents=True)
        n_files = _write_chat(records, folder)
        say(f"chat/{kind}: {len(records)} conversations in {n_files} files")

    truth = _ground_truth(size_mb, seed, {"web": web, "books": books, "papers": papers}, code, builder.bad_code,
                          builder.evals, chat)
    truth_json = json.dumps(truth, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    (out / "ground_truth.json").write_text(truth_json, encoding="utf-8")
    (out / "README.txt").write_text(_README.format(size_mb=float(size_mb), seed=seed), encoding="utf-8")
    say(f"ground truth: {out / 'ground_truth.json'} ({truth['counts']['total_documents']} documents)")
    return truth
